//! `atelier-mock-upstream --bind ADDR`: the mock as a process, for the demo, the
//! benchmarks and manual testing.

use std::net::SocketAddr;
use std::time::Duration;

use atelier_mock_upstream::{MockConfig, MockUpstream};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "atelier-mock-upstream",
    version,
    about = "An offline OpenRouter look-alike"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    bind: SocketAddr,
    /// The API key clients must send.
    #[arg(long, default_value = "mock-key")]
    api_key: String,
    /// Milliseconds between streamed tokens.
    #[arg(long, default_value_t = 20)]
    token_delay_ms: u64,
    /// Milliseconds before every response.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Polls a video job stays in each state.
    #[arg(long, default_value_t = 2)]
    video_polls_per_state: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = MockConfig {
        api_key: args.api_key,
        token_delay: Duration::from_millis(args.token_delay_ms),
        latency: Duration::from_millis(args.latency_ms),
        video_polls_per_state: args.video_polls_per_state,
        ..MockConfig::default()
    };
    let mock = match MockUpstream::bind(args.bind, config).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.bind);
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "mock upstream on {} (key {:?}); outputs are fake",
        mock.base_url(),
        mock.api_key()
    );
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
