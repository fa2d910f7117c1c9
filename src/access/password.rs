//! RabbitMQ's password hashes, so users exported by RabbitMQ log in unchanged: a hash is
//! base64 of a 4-octet salt followed by `H(salt ++ password)`, where `H` is SHA-256
//! (`rabbit_password_hashing_sha256`, the default), SHA-512 or MD5 (older exports).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::Digest;

/// The hashing algorithms RabbitMQ exports name, by their `hashing_algorithm` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hashing {
    /// `rabbit_password_hashing_sha256`, RabbitMQ's default.
    #[default]
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    Sha512,
    /// `rabbit_password_hashing_md5`, RabbitMQ before 3.6.
    Md5,
}

impl Hashing {
    /// Parses a `hashing_algorithm` value; `None` for one RabbitMQ does not ship.
    pub fn parse(name: &str) -> Option<Hashing> {
        match name {
            "rabbit_password_hashing_sha256" => Some(Hashing::Sha256),
            "rabbit_password_hashing_sha512" => Some(Hashing::Sha512),
            "rabbit_password_hashing_md5" => Some(Hashing::Md5),
            _ => None,
        }
    }

    /// The `hashing_algorithm` value.
    pub fn name(self) -> &'static str {
        match self {
            Hashing::Sha256 => "rabbit_password_hashing_sha256",
            Hashing::Sha512 => "rabbit_password_hashing_sha512",
            Hashing::Md5 => "rabbit_password_hashing_md5",
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            Hashing::Sha256 => sha2::Sha256::new().chain_update(salt).chain_update(password).finalize().to_vec(),
            Hashing::Sha512 => sha2::Sha512::new().chain_update(salt).chain_update(password).finalize().to_vec(),
            Hashing::Md5 => md5::Md5::new().chain_update(salt).chain_update(password).finalize().to_vec(),
        }
    }
}

/// Octets of salt in front of the digest.
const SALT_LEN: usize = 4;

/// A decoded password hash: salt and digest, or none (a user who cannot log in with a
/// password, as RabbitMQ's users with an empty `password_hash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    hashing: Hashing,
    /// Salt then digest; empty for no password.
    raw: Vec<u8>,
}

/// Why a stored or imported hash is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    /// Not base64.
    #[error("password_hash is not valid base64")]
    Base64,
    /// Too short for the salt and the algorithm's digest.
    #[error("password_hash has {found} octets, {algorithm} needs {expected}")]
    Length {
        /// The algorithm.
        algorithm: &'static str,
        /// Salt and digest octets it needs.
        expected: usize,
        /// What the hash decodes to.
        found: usize,
    },
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(hashing: Hashing, password: &str) -> PasswordHash {
        let salt = random_salt();
        let mut raw = salt.to_vec();
        raw.extend(hashing.digest(&salt, password.as_bytes()));
        PasswordHash { hashing, raw }
    }

    /// Decodes a `password_hash` as RabbitMQ exports it; an empty one means no password.
    pub fn decode(hashing: Hashing, encoded: &str) -> Result<PasswordHash, HashError> {
        let raw = STANDARD.decode(encoded.trim()).map_err(|_| HashError::Base64)?;
        let expected = SALT_LEN + hashing.digest(&[], &[]).len();
        if !raw.is_empty() && raw.len() != expected {
            return Err(HashError::Length { algorithm: hashing.name(), expected, found: raw.len() });
        }
        Ok(PasswordHash { hashing, raw })
    }

    /// The `password_hash` value RabbitMQ would export.
    pub fn encode(&self) -> String {
        STANDARD.encode(&self.raw)
    }

    /// The algorithm.
    pub fn hashing(&self) -> Hashing {
        self.hashing
    }

    /// Whether `password` is the one hashed, compared in constant time.
    pub fn verify(&self, password: &str) -> bool {
        if self.raw.len() <= SALT_LEN {
            return false;
        }
        let (salt, digest) = self.raw.split_at(SALT_LEN);
        let computed = self.hashing.digest(salt, password.as_bytes());
        computed.len() == digest.len() && computed.iter().zip(digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Four octets of salt from the operating system's generator.
fn random_salt() -> [u8; SALT_LEN] {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; SALT_LEN];
    // The system generator does not fail on the platforms we build for; should it, a
    // salt from the hasher's random keys still differs per call.
    if ring::rand::SystemRandom::new().fill(&mut salt).is_err() {
        let n = crate::broker::unique_name("");
        salt.copy_from_slice(&n.as_bytes()[..SALT_LEN]);
    }
    salt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_made_by_rabbitmq_verifies() {
        // `rabbitmqctl hash_password guest` style: salt 908D C60A, SHA-256.
        let salt = [0x90, 0x8d, 0xc6, 0x0a];
        let mut raw = salt.to_vec();
        raw.extend(sha2::Sha256::digest([&salt[..], b"guest"].concat()));
        let encoded = STANDARD.encode(&raw);
        let hash = PasswordHash::decode(Hashing::Sha256, &encoded).expect("decodes");
        assert!(hash.verify("guest"));
        assert!(!hash.verify("guest2"));
        assert_eq!(hash.encode(), encoded);
    }

    #[test]
    fn every_algorithm_round_trips_and_lengths_are_checked() {
        for h in [Hashing::Sha256, Hashing::Sha512, Hashing::Md5] {
            let hash = PasswordHash::new(h, "s3cret");
            assert!(hash.verify("s3cret") && !hash.verify("S3cret"), "{h:?}");
            let again = PasswordHash::decode(h, &hash.encode()).expect("decodes");
            assert!(again.verify("s3cret"));
            assert_eq!(Hashing::parse(h.name()), Some(h));
        }
        let sha256 = PasswordHash::new(Hashing::Sha256, "x").encode();
        assert!(matches!(PasswordHash::decode(Hashing::Sha512, &sha256), Err(HashError::Length { .. })));
        assert_eq!(PasswordHash::decode(Hashing::Sha256, "%%%"), Err(HashError::Base64));
        assert!(!PasswordHash::decode(Hashing::Sha256, "").expect("empty is no password").verify(""));
    }
}
