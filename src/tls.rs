//! TLS (docs/SPEC.md §6): the certificates a copy trusts and shows, read
//! once from `--tls-ca`, `--tls-cert` and `--tls-key`.
//!
//! The command connection is opened by redis-rs from these settings
//! ([`TlsSettings::certificates`]); the subscriber's socket is opened here
//! ([`connect`]), because a subscriber is named on its raw stream before
//! redis-rs takes it over, and redis-rs opens no stream it does not keep.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The TLS side of the Redis settings. The key never reaches a log line.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// PEM of the CA that signed the server's certificate; the system's
    /// roots when `None`.
    pub ca: Option<Vec<u8>>,
    /// PEM of the client certificate and its key, for mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// No verification of the server at all (`--tls-insecure`).
    pub insecure: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TlsSettings {
    /// The files as redis-rs takes them; `None` when the system's roots and
    /// no client certificate will do.
    pub fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.ca.is_none() && self.client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self.client.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.ca.clone(),
        })
    }

    /// Checks that the PEM files hold what they should; the reason if not.
    pub fn check(&self) -> Result<(), String> {
        client_config(self).map(|_| ())
    }
}

/// rustls leaves the choice of cryptography to the program: ours is ring.
/// Idempotent; a provider installed before wins.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls configuration of these settings.
fn client_config(tls: &TlsSettings) -> Result<ClientConfig, String> {
    install_crypto();
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| format!("--tls-ca holds no readable certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-ca: a certificate rustls refuses: {e}"))?;
            }
            if roots.is_empty() {
                return Err("--tls-ca holds no PEM certificate".to_string());
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match &tls.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--tls-cert holds no readable certificate: {e}"))?;
            if chain.is_empty() {
                return Err("--tls-cert holds no PEM certificate".to_string());
            }
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("--tls-key holds no readable private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--tls-cert and --tls-key do not go together: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    if tls.insecure {
        let provider = rustls::crypto::ring::default_provider();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AnyServer(
                provider.signature_verification_algorithms,
            )));
    }
    Ok(config)
}

/// A TLS stream to `host:port`, verified as the settings say.
pub async fn connect(
    host: &str,
    port: u16,
    tls: &TlsSettings,
) -> Result<TlsStream<TcpStream>, String> {
    let config = client_config(tls)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host} is not a name TLS can verify: {e}"))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))
}

/// `--tls-insecure`: every server certificate is taken, signatures are
/// still checked to be well formed.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
