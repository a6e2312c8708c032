//! The chat client over TLS: an https upstream is reached by TLS and must show
//! a certificate the platform trusts (ADR-0030).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;

use atelier_openrouter::{Client, Config, UpstreamError};
use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate for `localhost` (valid until 2126) and its key,
/// made with `openssl req -x509` for this test only: no root store has it.
const CERT: &[u8] = include_bytes!("fixtures/untrusted-localhost.crt.der");
const KEY: &[u8] = include_bytes!("fixtures/untrusted-localhost.key.der");

#[tokio::test]
async fn an_https_upstream_with_an_untrusted_certificate_is_refused() {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(CERT.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY.to_vec())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        acceptor.accept(socket).await.map(drop).map_err(|e| e.to_string())
    });

    let mut config = Config::new(
        format!("https://127.0.0.1:{port}/api/v1").parse().expect("url"),
        Some("sk-test".into()),
    );
    config.max_retries = 0;
    let client = Client::new(config).expect("client");
    let err = client
        .chat_raw(Bytes::from_static(br#"{"model":"m","messages":[]}"#))
        .await
        .expect_err("an untrusted certificate must fail the request");
    assert!(
        matches!(&err, UpstreamError::Unreachable(m) if m.contains("certificate")),
        "{err}"
    );
    // The server saw a TLS handshake, which the client broke off.
    let handshake = server.await.expect("server task");
    assert!(handshake.is_err(), "the handshake must not complete");
}
