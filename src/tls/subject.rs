//! The user name a client certificate gives for SASL EXTERNAL: its subject's CN, or the
//! whole subject as an RFC 4514 string, formatted as RabbitMQ's `rabbit_cert_info` does
//! so that user names carry over from a RabbitMQ set-up unchanged.
//!
//! Only the few DER structures on the way to the subject are read, with checked offsets
//! (rustls has verified the certificate already, but nothing here trusts a length). Called
//! by [`super::Tls::accept`] once per TLS connection that presented a certificate.

use crate::config::CertLoginFrom;

/// Why a certificate gives no user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The DER could not be read as far as the subject.
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
    /// The subject has no common name (RabbitMQ's wording).
    #[error("no name found")]
    NoName,
}

/// The login name of the certificate `der` (the end-entity certificate, DER encoded).
pub fn login_name(der: &[u8], from: CertLoginFrom) -> Result<String, SubjectError> {
    let rdns = subject(der)?;
    match from {
        CertLoginFrom::CommonName => {
            // Several CNs are joined with commas, unescaped, as RabbitMQ does.
            let cns: Vec<String> = rdns.iter().flatten().filter(|a| a.oid == OID_CN).map(|a| a.value.text()).collect();
            if cns.is_empty() {
                return Err(SubjectError::NoName);
            }
            Ok(cns.join(","))
        }
        CertLoginFrom::DistinguishedName => {
            if rdns.is_empty() {
                return Err(SubjectError::NoName);
            }
            Ok(format_dn(&rdns))
        }
    }
}

/// One attribute of a relative distinguished name.
#[derive(Debug)]
struct Attribute<'a> {
    /// The attribute type's OID, content octets only.
    oid: &'a [u8],
    value: Value<'a>,
}

/// An attribute value: a string of one of the ASN.1 string types, or anything else kept
/// as its whole DER encoding.
#[derive(Debug)]
enum Value<'a> {
    Text(String),
    Other(&'a [u8]),
}

impl Value<'_> {
    fn text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Other(der) => format!("#{}", hex(der)),
        }
    }
}

// Attribute type OIDs (content octets) and the names RabbitMQ prints for them.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const NAMES: &[(&[u8], &str)] = &[
    (&[0x55, 0x04, 0x04], "SN"),
    (&[0x55, 0x04, 0x2a], "GIVENNAME"),
    (&[0x55, 0x04, 0x2b], "INITIALS"),
    (&[0x55, 0x04, 0x2c], "GENERATIONQUALIFIER"),
    (OID_CN, "CN"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x55, 0x04, 0x0c], "TITLE"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x05], "SERIALNUMBER"),
    (&[0x55, 0x04, 0x41], "PSEUDONYM"),
    (&[0x55, 0x04, 0x09], "STREET"),
    (&[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19], "DC"),
    (&[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01], "UID"),
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01], "EMAILADDRESS"),
];

// DER tags used on the way.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// The subject's RDNs in certificate order (least specific first).
fn subject(der: &[u8]) -> Result<Vec<Vec<Attribute<'_>>>, SubjectError> {
    let (cert, _) = expect(der, SEQUENCE, "certificate")?;
    let (mut tbs, _) = expect(cert, SEQUENCE, "tbsCertificate")?;
    if tbs.first() == Some(&VERSION) {
        tbs = expect(tbs, VERSION, "version")?.1;
    }
    let (_, rest) = expect(tbs, INTEGER, "serialNumber")?;
    let (_, rest) = expect(rest, SEQUENCE, "signature")?;
    let (_, rest) = expect(rest, SEQUENCE, "issuer")?;
    let (_, rest) = expect(rest, SEQUENCE, "validity")?;
    let (mut name, _) = expect(rest, SEQUENCE, "subject")?;
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (mut set, rest) = expect(name, SET, "relative distinguished name")?;
        name = rest;
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let (mut pair, rest) = expect(set, SEQUENCE, "attribute")?;
            set = rest;
            let (oid, after) = expect(pair, OID, "attribute type")?;
            pair = after;
            let (tag, content, after) = tlv(pair)?;
            let whole = &pair[..pair.len() - after.len()];
            let value = string_value(tag, content).map_or(Value::Other(whole), Value::Text);
            rdn.push(Attribute { oid, value });
        }
        rdns.push(rdn);
    }
    Ok(rdns)
}

/// Splits one TLV off `input`: (tag, content, rest). Only low tag numbers occur here.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), SubjectError> {
    let malformed = SubjectError::Malformed("truncated or bad length");
    let (&tag, rest) = input.split_first().ok_or(malformed.clone())?;
    let (&first, mut rest) = rest.split_first().ok_or(malformed.clone())?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return Err(malformed);
        }
        let (len_octets, after) = rest.split_at(octets);
        rest = after;
        len_octets.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err(malformed);
    }
    let (content, rest) = rest.split_at(len);
    Ok((tag, content, rest))
}

/// Splits off a TLV that must have `tag`.
fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8]), SubjectError> {
    match tlv(input)? {
        (t, content, rest) if t == tag => Ok((content, rest)),
        _ => Err(SubjectError::Malformed(what)),
    }
}

/// Decodes the ASN.1 string types a name uses; `None` for other types.
fn string_value(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, and the ASCII subsets PrintableString, IA5String, VisibleString.
        0x0c | 0x13 | 0x16 | 0x1a => Some(String::from_utf8_lossy(content).into_owned()),
        // TeletexString: read as Latin-1, as RabbitMQ does.
        0x14 => Some(content.iter().map(|b| char::from(*b)).collect()),
        // BMPString: UCS-2 (UTF-16 big-endian).
        0x1e => {
            let units = content.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            Some(char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect())
        }
        // UniversalString: UCS-4 big-endian.
        0x1c => Some(
            content
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
        ),
        _ => None,
    }
}

/// The RFC 4514 form RabbitMQ prints: RDNs most specific first, joined by `,`, the
/// attributes of a multi-valued RDN joined by `+`.
fn format_dn(rdns: &[Vec<Attribute<'_>>]) -> String {
    let rdn = |attrs: &Vec<Attribute<'_>>| {
        attrs
            .iter()
            .map(|a| {
                let value = match &a.value {
                    Value::Text(s) => escape(s),
                    // RFC 4514 2.4: a value of another type is '#' and its DER in hex.
                    Value::Other(der) => format!("#{}", hex(der)),
                };
                format!("{}={value}", attribute_name(a.oid))
            })
            .collect::<Vec<_>>()
            .join("+")
    };
    rdns.iter().rev().map(rdn).collect::<Vec<_>>().join(",")
}

/// The short name of an attribute type, or its OID in dotted decimal.
fn attribute_name(oid: &[u8]) -> String {
    match NAMES.iter().find(|(o, _)| *o == oid) {
        Some((_, name)) => (*name).to_owned(),
        None => dotted(oid),
    }
}

/// An OID's content octets in dotted decimal (`2.5.4.3`).
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut n: u64 = 0;
    for b in oid {
        n = n.saturating_mul(128) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                // The first subidentifier packs two arcs: 40 * x + y, with x at most 2.
                let x = (n / 40).min(2);
                arcs.push(x);
                arcs.push(n - 40 * x);
            } else {
                arcs.push(n);
            }
            n = 0;
        }
    }
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// Escapes a value as RabbitMQ does (RFC 4514 2.4, plus every octet of a non-printable or
/// non-ASCII character as `\XX`): a leading space or `#`, a trailing space, and any of
/// `"+,;<>\` get a backslash.
fn escape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        let at_start = i == 0 && (b == b' ' || b == b'#');
        let at_end = i + 1 == bytes.len() && i > 0 && b == b' ';
        if at_start || at_end || matches!(b, b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\') {
            out.push('\\');
            out.push(char::from(b));
        } else if !(32..126).contains(&b) {
            out.push_str(&format!("\\{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert_with(dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn common_name_and_distinguished_name() {
        let der = cert_with(&[(DnType::CountryName, "SE"), (DnType::OrganizationName, "Example, Inc."), (DnType::CommonName, "app-1")]);
        assert_eq!(login_name(&der, CertLoginFrom::CommonName).expect("cn"), "app-1");
        assert_eq!(login_name(&der, CertLoginFrom::DistinguishedName).expect("dn"), "CN=app-1,O=Example\\, Inc.,C=SE");
    }

    #[test]
    fn no_common_name_is_no_name() {
        let der = cert_with(&[(DnType::OrganizationName, "Example")]);
        assert_eq!(login_name(&der, CertLoginFrom::CommonName), Err(SubjectError::NoName));
        assert_eq!(login_name(&der, CertLoginFrom::DistinguishedName).expect("dn"), "O=Example");
        assert_eq!(login_name(&cert_with(&[]), CertLoginFrom::DistinguishedName), Err(SubjectError::NoName));
    }

    #[test]
    fn unknown_attributes_are_dotted() {
        let der = cert_with(&[(DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99999, 7]), "x"), (DnType::CommonName, "u")]);
        assert_eq!(login_name(&der, CertLoginFrom::DistinguishedName).expect("dn"), "CN=u,1.3.6.1.4.1.99999.7=x");
    }

    #[test]
    fn escaping_follows_rabbitmq() {
        assert_eq!(escape("#a b "), "\\#a b\\ ");
        assert_eq!(escape(" "), "\\ ");
        assert_eq!(escape("a+b;c<d>\"e\\"), "a\\+b\\;c\\<d\\>\\\"e\\\\");
        assert_eq!(escape("å~"), "\\C3\\A5\\7E");
    }

    #[test]
    fn malformed_der_is_an_error() {
        let der = cert_with(&[(DnType::CommonName, "u")]);
        for cut in [0, 1, 10, der.len() / 2] {
            assert!(matches!(login_name(&der[..cut], CertLoginFrom::CommonName), Err(SubjectError::Malformed(_))), "cut at {cut}");
        }
        assert!(matches!(login_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], CertLoginFrom::CommonName), Err(SubjectError::Malformed(_))));
    }

    #[test]
    fn string_types() {
        assert_eq!(string_value(0x1e, &[0, b'a', 0x03, 0xbb]).as_deref(), Some("aλ"));
        assert_eq!(string_value(0x1c, &[0, 0, 0, b'a']).as_deref(), Some("a"));
        assert_eq!(string_value(0x14, &[0xe5]).as_deref(), Some("å"));
        assert_eq!(string_value(0x04, b"x"), None);
    }
}
