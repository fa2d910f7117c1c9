//! TLS for the AMQPS listener: builds the rustls server configuration from the PEM files
//! in [`Config`] (TLS 1.2 and 1.3, the ring provider), keeps the current one for new
//! connections and swaps in a fresh one on [`Tls::reload`] (SIGHUP), runs the TLS side of
//! an accepted socket, and turns a verified client certificate into the user name the
//! EXTERNAL mechanism logs in with ([`subject`]).
//!
//! [`crate::server`] owns the one [`Tls`] and calls [`Tls::accept`] per connection; the
//! binary's SIGHUP handler calls [`Tls::reload`].

pub mod subject;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{CertLoginFrom, Config};
use subject::SubjectError;

/// The user name a verified client certificate gives for EXTERNAL, or why it gives none.
pub type CertLogin = Result<String, SubjectError>;

/// Why the TLS files could not be made into a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which setting the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file holds no usable PEM section of the expected kind.
    #[error("{what} {path}: {source}")]
    Pem {
        /// Which setting the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM error (`NoItemsFound` for a file without the expected section).
        source: pem::Error,
    },
    /// The certificate and key do not make a pair rustls can serve: a key that does not
    /// match the certificate, a key of an unsupported kind, a certificate it cannot parse
    /// (X.509 v1, for instance).
    #[error("certificate {cert} with key {key}: {source}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The crypto provider cannot do TLS 1.2 and 1.3 (not with ring, but rustls checks).
    #[error("the crypto provider cannot serve TLS 1.2 and 1.3: {0}")]
    Provider(rustls::Error),
    /// rustls refused a certificate of the client CA bundle.
    #[error("{what} {path}: {source}")]
    Rejected {
        /// Which setting the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The client CA bundle cannot verify client certificates (for example, no CA in it).
    #[error("client CA bundle {path}: {source}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// The verifier's error.
        source: VerifierBuilderError,
    },
}

/// What is needed to build, and rebuild, the server configuration.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    require_client_cert: bool,
}

/// The TLS state of the server: the configuration new connections get, and how to
/// rebuild it.
#[derive(Debug)]
pub struct Tls {
    files: Files,
    login_from: CertLoginFrom,
    /// Swapped whole by [`Tls::reload`]; a connection takes a clone of the `Arc` when it
    /// starts its handshake, so a reload never changes a handshake under way.
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the certificate, key and client CAs named in `config`; `None` if TLS is not
    /// configured.
    pub fn load(config: &Config) -> Result<Option<Tls>, TlsError> {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Ok(None);
        };
        let files = Files {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: config.tls_client_ca.clone(),
            require_client_cert: config.tls_require_client_cert,
        };
        let server_config = build(&files)?;
        Ok(Some(Tls { files, login_from: config.tls_cert_login_from, current: RwLock::new(server_config) }))
    }

    /// Rereads the files: connections accepted from now on use the new certificate. On an
    /// error the configuration in use stays. Reads files, so call it off the async workers.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Runs the server side of the TLS handshake on `stream`. Returns the stream and, when
    /// the client presented a certificate (which rustls has verified by then), the user
    /// name it gives.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<(TlsStream<TcpStream>, Option<CertLogin>)> {
        let config = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()));
        let tls = TlsAcceptor::from(config).accept(stream).await?;
        let login = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| subject::login_name(cert, self.login_from));
        Ok((tls, login))
    }
}

/// Builds a server configuration from the files.
fn build(files: &Files) -> Result<Arc<ServerConfig>, TlsError> {
    let provider: Arc<CryptoProvider> = Arc::new(ring::default_provider());
    let chain = read_certs("certificate", &files.cert)?;
    let key_pem = read("key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Pem { what: "key", path: files.key.clone(), source })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Provider)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs("client CA bundle", path)? {
                roots.add(ca).map_err(|source| TlsError::Rejected { what: "client CA bundle", path: path.clone(), source })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // Without the requirement a client may still go without a certificate (and log
            // in with a password); one it does present must verify.
            let verifier = if files.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|source| TlsError::ClientCa { path: path.clone(), source })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Pair { cert: files.cert.clone(), key: files.key.clone(), source })?;
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

/// Every certificate in a PEM file; an error if there is none.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem { what, path: path.to_owned(), source };
    let certs = CertificateDer::pem_slice_iter(&read(what, path)?).collect::<Result<Vec<_>, _>>().map_err(pem_error)?;
    if certs.is_empty() {
        return Err(pem_error(pem::Error::NoItemsFound));
    }
    Ok(certs)
}
