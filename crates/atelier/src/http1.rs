//! The accept loops: every connection is served as HTTP/1.1 by hyper directly,
//! by the async workers together or by the one serving thread that accepted it
//! ([`serve_pinned`], ADR-0035).
//!
//! `axum::serve` hands each connection to hyper-util's "auto" builder, which reads
//! the first 24 bytes to tell an HTTP/2 preface from HTTP/1 and gives them back
//! to hyper on their own. hyper's read buffer then has to grow on the second read
//! and doubles, so every connection held a 16 KiB read buffer instead of 8 KiB
//! (heaptrack on 2,000 open streams; ADR-0022). atelier is reached over HTTP/1.1
//! (browsers, SDKs, reverse proxies; TLS and HTTP/2 end at the proxy), so the
//! detection bought nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, lets every connection finish its in-flight request (idle
/// keep-alive connections close at once) and returns when all have.
/// Handlers see the peer's address as `ConnectInfo<SocketAddr>`. A connection
/// that takes longer than `header_timeout` to send a request's headers, or
/// waits that long for its next request, is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper arms this timer whenever it waits for a request head, idle
    // keep-alive included, and drops it once the head has arrived.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small writes (a stream's events, a response's last bytes) go out at once
        // instead of waiting for the peer's acknowledgement of the previous one,
        // which a client's delayed ACK can hold back for 40 ms.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot disable Nagle's algorithm on a connection");
        }
        let service = router
            .clone()
            .map_request(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let closing = closing.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => return log_end(result),
                () = closing.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            log_end(connection.await);
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
}

/// Serves like [`serve`], on one thread per runtime in `runtimes` (each a
/// current-thread runtime): every thread accepts from the same listening
/// socket and serves the connections it accepted start to finish, so a request
/// never waits for another thread to be woken (ADR-0035). Returns once
/// `shutdown` has completed and every thread has finished serving; the
/// threads go on running what requests left behind (a stream's bookkeeping, a
/// spawned task) until [`ServingThreads::release`].
pub async fn serve_pinned(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    runtimes: Vec<tokio::runtime::Runtime>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<ServingThreads> {
    let listener = listener.into_std()?;
    let mut threads = ServingThreads {
        stop: CancellationToken::new(),
        release: CancellationToken::new(),
        threads: Vec::with_capacity(runtimes.len()),
    };
    let serving = TaskTracker::new();
    for (i, runtime) in runtimes.into_iter().enumerate() {
        // Registered with this thread's own runtime: every thread's reactor
        // hears of each new connection, and the first to accept it serves it.
        let listener = {
            let _in = runtime.enter();
            TcpListener::from_std(listener.try_clone()?)?
        };
        let (router, stop, release) = (router.clone(), threads.stop.clone(), threads.release.clone());
        let served = serving.token();
        let thread = std::thread::Builder::new()
            .name(format!("atelier-serve-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    serve(listener, router, header_timeout, stop.cancelled_owned()).await;
                    drop(served);
                    release.cancelled().await;
                });
            })?;
        threads.threads.push(thread);
    }
    serving.close();
    shutdown.await;
    threads.stop.cancel();
    serving.wait().await;
    Ok(threads)
}

/// The threads of [`serve_pinned`]. Dropped, they stop accepting and end once
/// their connections have, without being waited for here: they are kept for
/// [`wait_for_dropped_threads`].
pub struct ServingThreads {
    stop: CancellationToken,
    release: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ServingThreads {
    /// Ends the threads' runtimes, dropping what tasks remain on them, and
    /// waits for the threads.
    pub async fn release(mut self) {
        self.release.cancel();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        self.stop.cancel();
        self.release.cancel();
        dropped_threads().append(&mut self.threads);
    }
}

/// Serving threads whose [`ServingThreads`] was dropped instead of released:
/// the future of [`serve_pinned`] (or of `app::serve`) was dropped before it
/// ended, as a test's runtime does when the test returns.
static DROPPED: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

fn dropped_threads() -> std::sync::MutexGuard<'static, Vec<std::thread::JoinHandle<()>>> {
    DROPPED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits, at most `limit`, for the serving threads of servers that were dropped
/// rather than shut down (see [`ServingThreads`]); whether all have ended.
///
/// A process that drops servers (the API tests) calls this before it exits:
/// such a thread ends by dropping the last handle on its DuckDB file, which
/// closes it, and a close still running while the process runs its exit
/// handlers races DuckDB's static destructors (the likely cause of one abort,
/// "pure virtual method called", after every API test had passed).
pub fn wait_for_dropped_threads(limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let threads = std::mem::take(&mut *dropped_threads());
    let mut ended = true;
    for thread in threads {
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            ended = false;
        }
    }
    ended
}

fn log_end(result: hyper::Result<()>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A failed accept: a peer that gave up is nothing; anything else (out of file
/// descriptors, say) is logged and waited out for a second rather than spun on.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::Router;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Answers after 300 ms with the peer address the handler was given.
    async fn slow(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
        tokio::time::sleep(Duration::from_millis(300)).await;
        peer.to_string()
    }

    /// Answers with the name of the thread that served the request, after
    /// keeping that thread busy for 300 ms.
    async fn busy() -> String {
        std::thread::sleep(Duration::from_millis(300));
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    fn router() -> Router {
        Router::new().route("/slow", get(slow)).route("/busy", get(busy))
    }

    /// Serves [`router`] on a free port, shared or pinned to `threads` threads,
    /// until `stop` is sent.
    async fn start(
        pinned: Option<usize>,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let timeout = Duration::from_secs(30);
        let server = tokio::spawn(async move {
            match pinned {
                None => super::serve(listener, router(), timeout, shutdown).await,
                Some(threads) => {
                    let runtimes = (0..threads)
                        .map(|_| tokio::runtime::Builder::new_current_thread().enable_all().build())
                        .collect::<std::io::Result<_>>()
                        .expect("runtimes");
                    super::serve_pinned(listener, router(), timeout, runtimes, shutdown)
                        .await
                        .expect("serving")
                        .release()
                        .await;
                }
            }
        });
        (addr, stop, server)
    }

    async fn fetch(addr: SocketAddr, path: &str) -> (String, String) {
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nhost: atelier\r\nconnection: close\r\n\r\n");
        client.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        (answer, client.local_addr().expect("local addr").to_string())
    }

    #[tokio::test]
    async fn a_request_in_flight_at_shutdown_is_answered_and_then_serving_ends() {
        for pinned in [None, Some(2)] {
            let (addr, stop, server) = start(pinned).await;
            let answer = tokio::spawn(fetch(addr, "/slow"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.send(()).expect("stop");

            let (answer, peer) = answer.await.expect("client");
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(answer.ends_with(&peer), "{answer} should end with {peer}");

            tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .expect("serving ended")
                .expect("no panic");
            assert!(
                TcpStream::connect(addr).await.is_err(),
                "still accepting ({pinned:?})"
            );
        }
    }

    #[tokio::test]
    async fn the_threads_of_a_dropped_server_finish_their_requests_and_are_waited_for() {
        let (addr, _stop, server) = start(Some(2)).await;
        let answer = tokio::spawn(fetch(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // As a test's runtime does when the test returns: the future is dropped.
        server.abort();
        let _ = server.await;
        let dropped = std::time::Instant::now();
        let ended = tokio::task::spawn_blocking(|| super::wait_for_dropped_threads(Duration::from_secs(5)))
            .await
            .expect("waiting");
        assert!(ended, "the serving threads ended");
        // The thread that took the request ends only after answering it, 250 ms
        // after the drop: waiting for it took that long.
        let waited = dropped.elapsed();
        assert!(waited >= Duration::from_millis(200), "returned after {waited:?}");
        let (answer, _) = answer.await.expect("client");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    #[tokio::test]
    async fn pinned_threads_each_accept_so_one_busy_thread_holds_up_no_new_connection() {
        let (addr, stop, server) = start(Some(2)).await;
        let first = tokio::spawn(fetch(addr, "/busy"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The first connection's thread is blocked: only the other can take this.
        let second = tokio::spawn(fetch(addr, "/busy"));
        let (first, _) = first.await.expect("client");
        let (second, _) = second.await.expect("client");
        let thread = |answer: &str| answer.rsplit("\r\n").next().unwrap_or_default().to_owned();
        assert!(thread(&first).starts_with("atelier-serve-"), "{first}");
        assert!(thread(&second).starts_with("atelier-serve-"), "{second}");
        assert_ne!(thread(&first), thread(&second));
        stop.send(()).expect("stop");
        server.await.expect("no panic");
    }
}
