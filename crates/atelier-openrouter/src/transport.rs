//! How requests reach the upstream (ADR-0030).
//!
//! `POST chat/completions` is the hot path of every `/v1` call, and reqwest's
//! layers cost about a sixth of such a call's instructions in atelier (its
//! redirect layer and every response parse a URL, the `Uri` is formatted
//! again). So chat goes by hyper-util's pooled client directly ([`Direct`]),
//! with headers built once. Everything else (models, images, videos, key) goes
//! by reqwest, and so does chat when the environment names a proxy for the
//! upstream: reqwest knows how to reach an upstream through one. The direct
//! client is set up as reqwest sets itself up (rustls with the platform's
//! verifier, HTTP/2 or HTTP/1.1 by ALPN over TLS, HTTP/1.1 in the clear, the
//! same pool and TCP settings), so the choice changes nothing the upstream sees.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use thread_local::ThreadLocal;
use url::Url;

use crate::{Result, TimeoutKind, UpstreamError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body as a stream of byte chunks, whichever client read it.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// How long a pooled connection may stay idle; reqwest's default, kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on upstream connections, as reqwest sets them.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Where proxy settings come from: the environment (`HTTPS_PROXY`, `NO_PROXY`…)
/// in production; in tests, one proxy for everything or none at all.
pub(crate) enum Proxies {
    FromEnvironment,
    #[cfg(test)]
    Given(Option<Url>),
}

impl Proxies {
    fn matcher(&self) -> Matcher {
        match self {
            Proxies::FromEnvironment => Matcher::from_system(),
            #[cfg(test)]
            Proxies::Given(None) => Matcher::builder().build(),
            #[cfg(test)]
            Proxies::Given(Some(url)) => Matcher::builder().all(url.to_string()).build(),
        }
    }

    /// reqwest reads the environment itself; a given proxy is set explicitly.
    fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        match self {
            Proxies::FromEnvironment => Ok(builder),
            #[cfg(test)]
            Proxies::Given(None) => Ok(builder.no_proxy()),
            #[cfg(test)]
            Proxies::Given(Some(url)) => {
                Ok(builder.proxy(reqwest::Proxy::all(url.as_str()).map_err(|e| builder_error("proxy", &e))?))
            }
        }
    }
}

/// The direct client's TLS, as reqwest builds its own with the features
/// atelier's build enables: rustls with the platform's certificate verifier,
/// TLS 1.2 and 1.3. (ALPN is the connector's to set.)
fn tls_config() -> Result<rustls::ClientConfig> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier =
        rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| builder_error("TLS", &e))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| builder_error("TLS", &e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

fn builder_error(what: &str, e: &dyn std::fmt::Display) -> UpstreamError {
    UpstreamError::InvalidResponse(format!("cannot build the HTTP client ({what}): {e}"))
}

/// The two clients, built from one configuration.
pub(crate) struct Clients {
    pub reqwest: reqwest::Client,
    /// `None` when a proxy applies to the chat URL, or without an API key
    /// (reqwest's path then answers that none is configured).
    pub direct: Option<Direct>,
}

pub(crate) struct Settings<'a> {
    pub connect_timeout: Duration,
    /// Sent with every request: user agent and attribution headers.
    pub headers: HeaderMap,
    pub api_key: Option<&'a str>,
    pub chat_url: &'a Url,
    pub proxies: &'a Proxies,
}

impl Clients {
    pub fn new(settings: Settings<'_>) -> Result<Self> {
        let reqwest = settings
            .proxies
            .apply(reqwest::Client::builder())?
            .connect_timeout(settings.connect_timeout)
            // Retries are this client's own (`Client::execute`), made only
            // while nothing has reached the caller; reqwest's would also copy
            // every request for a replay it never makes.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            // An upstream does not send atelier elsewhere (as for polling URLs).
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(settings.headers.clone())
            .build()
            .map_err(|e| builder_error("reqwest", &e))?;
        let chat_uri: hyper::Uri = settings
            .chat_url
            .as_str()
            .parse()
            .map_err(|e| builder_error("chat URL", &e))?;
        let proxied = settings.proxies.matcher().intercept(&chat_uri).is_some();
        if proxied {
            tracing::info!("a proxy applies to the upstream: chat goes through it by reqwest");
        }
        let direct = match settings.api_key {
            Some(key) if !proxied => Some(Direct::new(&settings, chat_uri, key)?),
            _ => None,
        };
        Ok(Clients { reqwest, direct })
    }
}

type ChatClient = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// `POST chat/completions` by hyper-util's client: the URI and the headers are
/// made once, a request clones them.
///
/// Each thread that sends has a pool of its own. A pooled connection is served
/// by a task on the runtime that opened it; a server whose threads each serve
/// their own connections (ADR-0035) would otherwise hand every upstream reply
/// from one thread to another, waking it.
pub(crate) struct Direct {
    connector: HttpsConnector<HttpConnector>,
    clients: ThreadLocal<ChatClient>,
    uri: hyper::Uri,
    /// Content type, accept, user agent, attribution and the authorization,
    /// marked sensitive so no debug output shows it.
    headers: HeaderMap,
}

impl Direct {
    fn new(settings: &Settings<'_>, uri: hyper::Uri, api_key: &str) -> Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_keepalive(Some(TCP_KEEPALIVE));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let mut headers = settings.headers.clone();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let mut authorization = HeaderValue::from_str(&format!("Bearer {api_key}"))
            .map_err(|_| builder_error("API key", &"not a valid header value"))?;
        authorization.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, authorization);
        Ok(Direct {
            connector: https,
            clients: ThreadLocal::new(),
            uri,
            headers,
        })
    }

    /// This thread's client.
    fn client(&self) -> &ChatClient {
        self.clients.get_or(|| {
            HyperClient::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(POOL_IDLE)
                .build(self.connector.clone())
        })
    }

    /// Sends `body` (a JSON chat request); the future ends with the headers.
    pub fn post(&self, body: Bytes) -> impl Future<Output = Result<Reply>> + Send + use<> {
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let sent = self.client().request(request);
        async move {
            match sent.await {
                Ok(response) => Ok(Reply::Direct(response)),
                Err(e) => {
                    let connect_timeout = e.is_connect() && caused_by_timeout(&e);
                    Err(transport_error(&e, connect_timeout))
                }
            }
        }
    }
}

/// An upstream response whose headers have arrived, from either client.
pub(crate) enum Reply {
    Direct(hyper::Response<Incoming>),
    Reqwest(reqwest::Response),
}

/// Sends a request by reqwest; the future ends with the headers.
pub(crate) async fn send_by_reqwest(request: reqwest::RequestBuilder) -> Result<Reply> {
    match request.send().await {
        Ok(response) => Ok(Reply::Reqwest(response)),
        Err(e) => Err(transport_error(&e, e.is_timeout())),
    }
}

impl Reply {
    pub fn status(&self) -> StatusCode {
        match self {
            Reply::Direct(response) => response.status(),
            Reply::Reqwest(response) => response.status(),
        }
    }

    pub fn headers(&self) -> &HeaderMap {
        match self {
            Reply::Direct(response) => response.headers(),
            Reply::Reqwest(response) => response.headers(),
        }
    }

    /// The whole body, within `limit`.
    pub async fn bytes(self, limit: Duration) -> Result<Bytes> {
        let read = async {
            match self {
                Reply::Direct(response) => response
                    .into_body()
                    .collect()
                    .await
                    .map(|body| body.to_bytes())
                    .map_err(|e| transport_error(&e, false)),
                Reply::Reqwest(response) => response.bytes().await.map_err(|e| transport_error(&e, false)),
            }
        };
        match tokio::time::timeout(limit, read).await {
            Err(_) => Err(UpstreamError::Timeout(TimeoutKind::Total)),
            Ok(result) => result,
        }
    }

    /// The body as it arrives.
    pub fn into_stream(self) -> BodyStream {
        match self {
            Reply::Direct(response) => {
                Box::pin(BodyDataStream::new(response.into_body()).map_err(BoxError::from))
            }
            Reply::Reqwest(response) => Box::pin(response.bytes_stream().map_err(BoxError::from)),
        }
    }
}

/// A failure to talk to the upstream at all: the connect timeout when the
/// caller says that is what ran out, else what really failed (refused, DNS,
/// reset), from the error's source chain.
fn transport_error(e: &(dyn std::error::Error + 'static), connect_timeout: bool) -> UpstreamError {
    if connect_timeout {
        return UpstreamError::Timeout(TimeoutKind::Connect);
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    UpstreamError::Unreachable(text)
}

/// Whether an I/O timeout is among the error's causes (hyper-util's connector
/// reports its connect timeout so).
fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(e.source(), |inner| inner.source()).any(|inner| {
        inner
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}
