//! Headers exchange matching.
//!
//! Semantics follow RabbitMQ 3.13+/4.x (`rabbit_exchange_type_headers` and
//! `mc_amqpl:routing_headers/2` in rabbitmq-server):
//!
//! * The binding argument `x-match` selects the mode: `all` (the default when
//!   absent), `any`, `all-with-x` or `any-with-x`.  Any other value is
//!   rejected at bind time; see [`HeadersBinding::new`].
//! * `x-match` itself never takes part in matching.  Other binding keys
//!   starting with `x-` are ignored by `all` / `any` and compared like any
//!   other key by `all-with-x` / `any-with-x`.
//! * `all` matches when every remaining binding key matches (so a binding
//!   with no remaining keys matches every message, with or without headers);
//!   `any` matches when at least one does (so such a binding matches nothing).
//! * A binding key whose value is void (`V`) matches when the message has a
//!   header of that name, whatever its type or value.
//! * Otherwise the header must exist and be equal, using Erlang's exact
//!   equality (`=:=`) on the values as RabbitMQ decodes them, which drops the
//!   top-level type tag:
//!   - all integer types compare by numeric value (a `b` 1 equals an `l` 1);
//!   - `f` and `d` floats compare by value, but never equal an integer;
//!   - long strings (`S`) and byte arrays (`x`) compare by bytes and equal
//!     each other, but never a number (`"1"` is not `1`);
//!   - booleans, decimals (scale and value), arrays and tables compare only
//!     with the same kind; elements of arrays and tables keep their type tags,
//!     so they must match in type as well as value;
//!   - a **message** header of type timestamp is converted to milliseconds
//!     (`mc_amqpl:routing_value(timestamp, V) -> V * 1000`) while the binding
//!     value is not, so a timestamp binding value `T` matches a timestamp
//!     header only when `T` is 0, and an integer binding value `1000 * T`
//!     matches a timestamp header `T`.  This mirrors RabbitMQ exactly,
//!     quirk included.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

use crate::broker::queue::args::type_name;

/// How the binding's keys combine, from the `x-match` binding argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XMatch {
    /// Every binding key must match; `x-` keys are ignored.  The default.
    #[default]
    All,
    /// At least one binding key must match; `x-` keys are ignored.
    Any,
    /// Every binding key must match, `x-` keys included.
    AllWithX,
    /// At least one binding key must match, `x-` keys included.
    AnyWithX,
}

impl XMatch {
    /// The `x-match` argument value naming this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            XMatch::All => "all",
            XMatch::Any => "any",
            XMatch::AllWithX => "all-with-x",
            XMatch::AnyWithX => "any-with-x",
        }
    }

    fn with_x(self) -> bool {
        matches!(self, XMatch::AllWithX | XMatch::AnyWithX)
    }
}

/// A binding value as RabbitMQ compares it against a message header.
#[derive(Debug, Clone)]
enum Expected {
    /// Void binding value: the header only has to be present.
    Present,
    /// Any integer type, or a timestamp (binding side: not scaled).
    Int(i128),
    /// `f` or `d`.
    Float(f64),
    Bool(bool),
    /// Scale and unscaled value.
    Decimal(u8, u32),
    /// Long string, byte array (or short string).
    Bytes(Box<[u8]>),
    /// Arrays compare element-wise with type tags.
    Array(FieldArray),
    /// Tables compare entry-wise with type tags.
    Table(FieldTable),
}

impl Expected {
    fn from_binding(value: &AMQPValue) -> Self {
        match value {
            AMQPValue::Void => Expected::Present,
            AMQPValue::Boolean(b) => Expected::Bool(*b),
            AMQPValue::Float(f) => Expected::Float(f64::from(*f)),
            AMQPValue::Double(d) => Expected::Float(*d),
            AMQPValue::DecimalValue(d) => Expected::Decimal(d.scale, d.value),
            AMQPValue::ShortString(s) => Expected::Bytes(s.as_str().as_bytes().into()),
            AMQPValue::LongString(s) => Expected::Bytes(s.as_bytes().into()),
            AMQPValue::ByteArray(b) => Expected::Bytes(b.as_slice().into()),
            AMQPValue::FieldArray(a) => Expected::Array(a.clone()),
            AMQPValue::FieldTable(t) => Expected::Table(t.clone()),
            AMQPValue::Timestamp(t) => Expected::Int(i128::from(*t)),
            AMQPValue::ShortShortInt(v) => Expected::Int(i128::from(*v)),
            AMQPValue::ShortShortUInt(v) => Expected::Int(i128::from(*v)),
            AMQPValue::ShortInt(v) => Expected::Int(i128::from(*v)),
            AMQPValue::ShortUInt(v) => Expected::Int(i128::from(*v)),
            AMQPValue::LongInt(v) => Expected::Int(i128::from(*v)),
            AMQPValue::LongUInt(v) => Expected::Int(i128::from(*v)),
            AMQPValue::LongLongInt(v) => Expected::Int(i128::from(*v)),
        }
    }

    /// Whether a message header value equals this binding value.
    fn matches(&self, header: &AMQPValue) -> bool {
        match self {
            Expected::Present => true,
            Expected::Int(i) => match header {
                // mc_amqpl:routing_value/2 scales message timestamps to ms.
                AMQPValue::Timestamp(t) => i128::from(*t) * 1000 == *i,
                _ => int_value(header) == Some(*i),
            },
            Expected::Float(f) => match header {
                AMQPValue::Float(h) => f64::from(*h) == *f,
                AMQPValue::Double(h) => *h == *f,
                _ => false,
            },
            Expected::Bool(b) => matches!(header, AMQPValue::Boolean(h) if h == b),
            Expected::Decimal(scale, value) => {
                matches!(header, AMQPValue::DecimalValue(h) if h.scale == *scale && h.value == *value)
            }
            Expected::Bytes(b) => match header {
                AMQPValue::LongString(h) => h.as_bytes() == &b[..],
                AMQPValue::ByteArray(h) => h.as_slice() == &b[..],
                AMQPValue::ShortString(h) => h.as_str().as_bytes() == &b[..],
                _ => false,
            },
            Expected::Array(a) => matches!(header, AMQPValue::FieldArray(h) if h == a),
            Expected::Table(t) => matches!(header, AMQPValue::FieldTable(h) if h == t),
        }
    }
}

/// The numeric value of an integer-typed value (not timestamps).
fn int_value(value: &AMQPValue) -> Option<i128> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i128::from(*v),
        AMQPValue::ShortShortUInt(v) => i128::from(*v),
        AMQPValue::ShortInt(v) => i128::from(*v),
        AMQPValue::ShortUInt(v) => i128::from(*v),
        AMQPValue::LongInt(v) => i128::from(*v),
        AMQPValue::LongUInt(v) => i128::from(*v),
        AMQPValue::LongLongInt(v) => i128::from(*v),
        _ => return None,
    })
}

/// One binding key to test against the message headers.
#[derive(Debug, Clone)]
struct Condition {
    key: Box<str>,
    expected: Expected,
}

/// A headers-exchange binding, built once at bind time from the binding
/// arguments.  See the module documentation for the matching rules.
#[derive(Debug, Clone)]
pub struct HeadersBinding {
    x_match: XMatch,
    /// The binding keys that take part in matching (without `x-match`, and
    /// without other `x-` keys unless the mode is `*-with-x`).
    conditions: Vec<Condition>,
}

impl HeadersBinding {
    /// Parses binding arguments; Err(text) when x-match has an invalid value (RabbitMQ replies 406 PRECONDITION_FAILED with a text like "Invalid x-match field value ..."; match its wording).
    ///
    /// The error text is RabbitMQ's, without the `PRECONDITION_FAILED - `
    /// prefix, e.g. `Invalid x-match field value <<"foo">>; expected all,
    /// any, all-with-x, or any-with-x` or `Invalid x-match field type
    /// signedint (value 1); expected longstr`.  Values are rendered as
    /// Erlang terms, approximating `~tp`.
    pub fn new(arguments: &FieldTable) -> Result<Self, String> {
        let x_match = match arguments.inner().get("x-match") {
            None => XMatch::All,
            Some(AMQPValue::LongString(s)) => parse_x_match(s.as_bytes())?,
            // Never produced by the wire codec; accepted like a long string.
            Some(AMQPValue::ShortString(s)) => parse_x_match(s.as_str().as_bytes())?,
            Some(other) => {
                let mut value = String::new();
                erlang_term(other, &mut value);
                return Err(format!(
                    "Invalid x-match field type {} (value {value}); expected longstr",
                    type_name(other)
                ));
            }
        };
        let conditions = arguments
            .inner()
            .iter()
            .filter(|(key, _)| {
                let key = key.as_str();
                key != "x-match" && (x_match.with_x() || !key.starts_with("x-"))
            })
            .map(|(key, value)| Condition {
                key: key.as_str().into(),
                expected: Expected::from_binding(value),
            })
            .collect();
        Ok(HeadersBinding {
            x_match,
            conditions,
        })
    }

    /// The binding's match mode.
    pub fn x_match(&self) -> XMatch {
        self.x_match
    }

    /// Whether a message with these headers (None: no headers property)
    /// matches the binding.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let hit = |c: &Condition| {
            headers
                .and_then(|h| h.inner().get(&*c.key))
                .is_some_and(|value| c.expected.matches(value))
        };
        match self.x_match {
            XMatch::All | XMatch::AllWithX => self.conditions.iter().all(hit),
            XMatch::Any | XMatch::AnyWithX => self.conditions.iter().any(hit),
        }
    }
}

/// Parses a longstr `x-match` value, with RabbitMQ's error text.
fn parse_x_match(value: &[u8]) -> Result<XMatch, String> {
    match value {
        b"all" => Ok(XMatch::All),
        b"any" => Ok(XMatch::Any),
        b"all-with-x" => Ok(XMatch::AllWithX),
        b"any-with-x" => Ok(XMatch::AnyWithX),
        other => {
            let mut text = String::from("Invalid x-match field value ");
            erlang_binary(other, &mut text);
            text.push_str("; expected all, any, all-with-x, or any-with-x");
            Err(text)
        }
    }
}

/// Renders a field value the way RabbitMQ holds it, as an Erlang term.
fn erlang_term(value: &AMQPValue, out: &mut String) {
    use std::fmt::Write;
    match value {
        AMQPValue::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        AMQPValue::Float(f) => erlang_float(f64::from(*f), out),
        AMQPValue::Double(d) => erlang_float(*d, out),
        AMQPValue::DecimalValue(d) => {
            let _ = write!(out, "{{{},{}}}", d.scale, d.value);
        }
        AMQPValue::ShortString(s) => erlang_binary(s.as_str().as_bytes(), out),
        AMQPValue::LongString(s) => erlang_binary(s.as_bytes(), out),
        AMQPValue::ByteArray(b) => erlang_binary(b.as_slice(), out),
        AMQPValue::Timestamp(t) => {
            let _ = write!(out, "{t}");
        }
        AMQPValue::Void => out.push_str("undefined"),
        AMQPValue::FieldArray(a) => {
            out.push('[');
            for (i, v) in a.as_slice().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{{{},", type_name(v));
                erlang_term(v, out);
                out.push('}');
            }
            out.push(']');
        }
        AMQPValue::FieldTable(t) => {
            out.push('[');
            for (i, (k, v)) in t.inner().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('{');
                erlang_binary(k.as_str().as_bytes(), out);
                let _ = write!(out, ",{},", type_name(v));
                erlang_term(v, out);
                out.push('}');
            }
            out.push(']');
        }
        AMQPValue::ShortShortInt(_)
        | AMQPValue::ShortShortUInt(_)
        | AMQPValue::ShortInt(_)
        | AMQPValue::ShortUInt(_)
        | AMQPValue::LongInt(_)
        | AMQPValue::LongUInt(_)
        | AMQPValue::LongLongInt(_) => {
            if let Some(i) = int_value(value) {
                let _ = write!(out, "{i}");
            }
        }
    }
}

/// Approximates Erlang's shortest float rendering (`1.5`, `1.0e20`).
fn erlang_float(f: f64, out: &mut String) {
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !mantissa.contains('.') => {
            out.push_str(mantissa);
            out.push_str(".0e");
            out.push_str(exp);
        }
        _ => out.push_str(&s),
    }
}

/// Renders a binary as `~tp` does: `<<"text">>` when printable (with
/// `/utf8` for non-ASCII UTF-8), else `<<1,2,3>>`.
fn erlang_binary(bytes: &[u8], out: &mut String) {
    use std::fmt::Write;
    fn printable(c: char) -> bool {
        matches!(c, ' '..='~' | '\u{a0}'..='\u{ff}' | '\n' | '\r' | '\t' | '\u{b}' | '\u{8}' | '\u{c}' | '\u{1b}')
    }
    fn push_escaped(c: char, out: &mut String) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{1b}' => out.push_str("\\e"),
            c => out.push(c),
        }
    }
    out.push_str("<<");
    if !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(s) if s.chars().all(printable) => {
                out.push('"');
                s.chars().for_each(|c| push_escaped(c, out));
                out.push('"');
                if !s.is_ascii() {
                    out.push_str("/utf8");
                }
            }
            _ if bytes.iter().all(|&b| printable(char::from(b))) => {
                out.push('"');
                bytes.iter().for_each(|&b| push_escaped(char::from(b), out));
                out.push('"');
            }
            _ => {
                for (i, b) in bytes.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{b}");
                }
            }
        }
    }
    out.push_str(">>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{DecimalValue, LongString};

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn binding(entries: &[(&str, AMQPValue)]) -> HeadersBinding {
        match HeadersBinding::new(&table(entries)) {
            Ok(b) => b,
            Err(e) => panic!("unexpected bind error: {e}"),
        }
    }

    fn hit(b: &HeadersBinding, headers: &[(&str, AMQPValue)]) -> bool {
        b.matches(Some(&table(headers)))
    }

    fn bind_error(x_match: AMQPValue) -> String {
        match HeadersBinding::new(&table(&[("x-match", x_match), ("a", s("1"))])) {
            Ok(b) => panic!("expected error, got {b:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn x_match_parsing() {
        assert_eq!(binding(&[]).x_match(), XMatch::All);
        assert_eq!(binding(&[("a", s("b"))]).x_match(), XMatch::All);
        for mode in [XMatch::All, XMatch::Any, XMatch::AllWithX, XMatch::AnyWithX] {
            assert_eq!(binding(&[("x-match", s(mode.as_str()))]).x_match(), mode);
        }
        assert_eq!(
            bind_error(s("foo")),
            "Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(
            bind_error(s("ALL")),
            "Invalid x-match field value <<\"ALL\">>; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(
            bind_error(s("")),
            "Invalid x-match field value <<>>; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(
            bind_error(s("é\"\n")),
            "Invalid x-match field value <<\"é\\\"\\n\"/utf8>>; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(
            bind_error(AMQPValue::LongString(LongString::from(vec![0u8, 200]))),
            "Invalid x-match field value <<0,200>>; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(
            bind_error(AMQPValue::LongInt(1)),
            "Invalid x-match field type signedint (value 1); expected longstr"
        );
        assert_eq!(
            bind_error(AMQPValue::ByteArray(b"all".to_vec().into())),
            "Invalid x-match field type binary (value <<\"all\">>); expected longstr"
        );
        assert_eq!(
            bind_error(AMQPValue::Void),
            "Invalid x-match field type void (value undefined); expected longstr"
        );
        assert_eq!(
            bind_error(AMQPValue::Boolean(true)),
            "Invalid x-match field type bool (value true); expected longstr"
        );
        assert_eq!(
            bind_error(AMQPValue::Double(1.5)),
            "Invalid x-match field type double (value 1.5); expected longstr"
        );
        assert_eq!(
            bind_error(AMQPValue::FieldArray(vec![AMQPValue::LongLongInt(1), s("a")].into())),
            "Invalid x-match field type array (value [{long,1},{longstr,<<\"a\">>}]); expected longstr"
        );
        assert_eq!(
            bind_error(AMQPValue::FieldTable(table(&[("k", AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 150 }))]))),
            "Invalid x-match field type table (value [{<<\"k\">>,decimal,{2,150}}]); expected longstr"
        );
    }

    /// RabbitMQ's exchanges_SUITE `headers_exchange` scenario.
    #[test]
    fn all_and_any() {
        let all = binding(&[("x-match", s("all")), ("foo", s("bar")), ("fuu", s("ber"))]);
        let any = binding(&[("x-match", s("any")), ("foo", s("bar")), ("fuu", s("ber"))]);
        let both = [("foo", s("bar")), ("fuu", s("ber"))];
        let one = [("foo", s("bar"))];
        let wrong = [("foo", s("bar")), ("fuu", s("BER"))];
        let extra = [("foo", s("bar")), ("fuu", s("ber")), ("zzz", s("x"))];
        assert!(hit(&all, &both));
        assert!(hit(&all, &extra));
        assert!(!hit(&all, &one));
        assert!(!hit(&all, &wrong));
        assert!(!hit(&all, &[]));
        assert!(!all.matches(None));
        assert!(hit(&any, &both));
        assert!(hit(&any, &one));
        assert!(hit(&any, &wrong));
        assert!(!hit(&any, &[("fuu", s("BER"))]));
        assert!(!hit(&any, &[]));
        assert!(!any.matches(None));
        // x-match absent: all.
        let default = binding(&[("foo", s("bar")), ("fuu", s("ber"))]);
        assert!(hit(&default, &both));
        assert!(!hit(&default, &one));
    }

    #[test]
    fn bindings_without_keys() {
        for (mode, expected) in [
            ("all", true),
            ("any", false),
            ("all-with-x", true),
            ("any-with-x", false),
        ] {
            let b = binding(&[("x-match", s(mode))]);
            assert_eq!(b.matches(None), expected, "{mode}");
            assert_eq!(hit(&b, &[("a", s("b"))]), expected, "{mode}");
            assert_eq!(hit(&b, &[("x-match", s(mode))]), expected, "{mode}");
        }
        assert!(binding(&[]).matches(None));
        // Only x- keys: ignored by all/any.
        let all = binding(&[("x-match", s("all")), ("x-foo", s("1"))]);
        assert!(all.matches(None));
        let any = binding(&[("x-match", s("any")), ("x-foo", s("1"))]);
        assert!(!hit(&any, &[("x-foo", s("1"))]));
    }

    #[test]
    fn x_keys() {
        let all = binding(&[("x-match", s("all")), ("x-foo", s("1")), ("a", s("1"))]);
        assert!(hit(&all, &[("a", s("1"))]));
        assert!(hit(&all, &[("a", s("1")), ("x-foo", s("2"))]));
        let all_x = binding(&[
            ("x-match", s("all-with-x")),
            ("x-foo", s("1")),
            ("a", s("1")),
        ]);
        assert!(!hit(&all_x, &[("a", s("1"))]));
        assert!(!hit(&all_x, &[("a", s("1")), ("x-foo", s("2"))]));
        assert!(hit(&all_x, &[("a", s("1")), ("x-foo", s("1"))]));
        let any_x = binding(&[
            ("x-match", s("any-with-x")),
            ("x-foo", s("1")),
            ("a", s("1")),
        ]);
        assert!(hit(&any_x, &[("x-foo", s("1"))]));
        assert!(hit(&any_x, &[("a", s("1"))]));
        assert!(!hit(&any_x, &[("x-foo", s("2"))]));
        // The prefix is case-sensitive: "X-foo" is an ordinary key.
        let upper = binding(&[("x-match", s("all")), ("X-foo", s("1"))]);
        assert!(!hit(&upper, &[]));
        assert!(hit(&upper, &[("X-foo", s("1"))]));
        // "x-match" is never a condition, even in *-with-x mode.
        let any_x_only = binding(&[("x-match", s("any-with-x"))]);
        assert!(!hit(&any_x_only, &[("x-match", s("any-with-x"))]));
    }

    /// RabbitMQ's exchanges_SUITE `headers_exchange_key_presence_only`.
    #[test]
    fn void_means_present() {
        let all = binding(&[
            ("x-match", s("all-with-x")),
            ("foo", AMQPValue::Void),
            ("x-foo", AMQPValue::Void),
        ]);
        let any = binding(&[
            ("x-match", s("any-with-x")),
            ("foo", AMQPValue::Void),
            ("x-foo", AMQPValue::Void),
        ]);
        let msg1 = [
            ("foo", s("anything")),
            ("x-foo", AMQPValue::LongLongInt(42)),
        ];
        let msg2 = [("foo", s("whatever"))];
        let msg3 = [("x-foo", s("something"))];
        let msg4 = [("other", s("value"))];
        assert!(hit(&all, &msg1) && hit(&any, &msg1));
        assert!(!hit(&all, &msg2) && hit(&any, &msg2));
        assert!(!hit(&all, &msg3) && hit(&any, &msg3));
        assert!(!hit(&all, &msg4) && !hit(&any, &msg4));
        assert!(!all.matches(None) && !any.matches(None));
        // A void header counts as present; it equals no non-void value.
        let plain = binding(&[("foo", AMQPValue::Void)]);
        assert!(hit(&plain, &[("foo", AMQPValue::Void)]));
        assert!(hit(
            &plain,
            &[("foo", AMQPValue::FieldTable(FieldTable::default()))]
        ));
        let empty = binding(&[("foo", s(""))]);
        assert!(!hit(&empty, &[("foo", AMQPValue::Void)]));
        assert!(hit(&empty, &[("foo", s(""))]));
    }

    fn eq(binding_value: AMQPValue, header_value: AMQPValue) -> bool {
        hit(&binding(&[("k", binding_value)]), &[("k", header_value)])
    }

    #[test]
    fn value_comparison() {
        use AMQPValue::*;
        // Integers compare by value across widths and signedness.
        assert!(eq(LongInt(1), ShortShortUInt(1)));
        assert!(eq(LongLongInt(-5), ShortShortInt(-5)));
        assert!(eq(LongUInt(u32::MAX), LongLongInt(i64::from(u32::MAX))));
        assert!(!eq(LongInt(1), LongInt(2)));
        assert!(!eq(ShortInt(-1), ShortUInt(u16::MAX)));
        // Strings are not numbers.
        assert!(!eq(s("1"), LongLongInt(1)));
        assert!(!eq(LongLongInt(1), s("1")));
        // Long strings and byte arrays are both binaries.
        assert!(eq(s("abc"), ByteArray(b"abc".to_vec().into())));
        assert!(eq(ByteArray(b"abc".to_vec().into()), s("abc")));
        assert!(!eq(s("abc"), s("abd")));
        // Floats compare by value, never equal to integers.
        assert!(eq(Float(1.5), Double(1.5)));
        assert!(eq(Double(2.0), Float(2.0)));
        assert!(!eq(Float(0.1), Double(0.1)));
        assert!(!eq(Double(1.0), LongInt(1)));
        assert!(!eq(LongInt(1), Double(1.0)));
        // Booleans are not integers.
        assert!(eq(Boolean(true), Boolean(true)));
        assert!(!eq(Boolean(true), Boolean(false)));
        assert!(!eq(Boolean(true), ShortShortUInt(1)));
        assert!(!eq(ShortShortUInt(0), Boolean(false)));
        // Decimals compare scale and value.
        let d = |scale, value| DecimalValue(amq_protocol::types::DecimalValue { scale, value });
        assert!(eq(d(1, 15), d(1, 15)));
        assert!(!eq(d(1, 10), d(0, 1)));
        // Arrays and tables: structure and element types must agree.
        let arr = |v: Vec<AMQPValue>| FieldArray(v.into());
        assert!(eq(
            arr(vec![LongInt(1), s("x")]),
            arr(vec![LongInt(1), s("x")])
        ));
        assert!(!eq(arr(vec![LongInt(1)]), arr(vec![LongLongInt(1)])));
        assert!(!eq(
            arr(vec![LongInt(1)]),
            arr(vec![LongInt(1), LongInt(1)])
        ));
        assert!(!eq(
            arr(vec![]),
            FieldTable(amq_protocol::types::FieldTable::default())
        ));
        let t1 = FieldTable(table(&[("a", LongInt(1))]));
        assert!(eq(t1.clone(), t1.clone()));
        assert!(!eq(t1.clone(), FieldTable(table(&[("a", LongLongInt(1))]))));
        assert!(!eq(
            t1,
            FieldTable(table(&[("a", LongInt(1)), ("b", LongInt(1))]))
        ));
    }

    #[test]
    fn timestamp_headers_are_milliseconds() {
        use AMQPValue::*;
        assert!(!eq(Timestamp(5), Timestamp(5)));
        assert!(eq(Timestamp(0), Timestamp(0)));
        assert!(eq(LongLongInt(5000), Timestamp(5)));
        assert!(eq(Timestamp(5000), Timestamp(5)));
        assert!(eq(Timestamp(5), LongInt(5)));
        assert!(!eq(LongLongInt(5), Timestamp(5)));
        // No overflow for huge timestamps.
        assert!(!eq(LongLongInt(i64::MAX), Timestamp(u64::MAX)));
        // Nested timestamps keep their type and are not scaled.
        let arr = |v: Vec<AMQPValue>| FieldArray(v.into());
        assert!(eq(arr(vec![Timestamp(5)]), arr(vec![Timestamp(5)])));
    }

    #[test]
    fn float_rendering() {
        let render = |f: f64| {
            let mut s = String::new();
            erlang_float(f, &mut s);
            s
        };
        assert_eq!(render(1.5), "1.5");
        assert_eq!(render(-2.0), "-2.0");
        assert_eq!(render(1e20), "1.0e20");
        assert_eq!(render(1.25e-7), "1.25e-7");
    }
}
