//! TLS for both listeners from one PEM certificate chain and key.

use std::path::Path;
use std::sync::Arc;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// PEM files read once, for both listeners.
#[derive(Clone)]
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl TlsMaterial {
    /// Reads and checks the certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
        };
        let material = Self { cert_pem: read(cert)?, key_pem: read(key)? };
        // Fail at start, with the file's name, rather than at the first connection.
        material.acceptor(cert, key)?;
        Ok(material)
    }

    fn acceptor(&self, cert_path: &Path, key_path: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut self.cert_pem.as_slice()).filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate { path: cert_path.display().to_string() });
        }
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_slice())
            .ok()
            .flatten()
            .ok_or_else(|| TlsError::NoKey { path: key_path.display().to_string() })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// Returns the acceptor of the device listener.
    pub fn device_acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        self.acceptor(Path::new("certificate"), Path::new("key"))
    }

    /// Returns the TLS configuration of the gRPC listener.
    pub fn grpc_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}
