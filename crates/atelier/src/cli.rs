//! The command line: `serve` (the default), `migrate`, `user …` (with budgets),
//! `apikey …`, `tokens purge`, `print-config`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use atelier_store::{DatabaseUrl, Role, User, UserQuery};
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::api;
use crate::api::keys::BudgetOverrideBody;
use crate::app::{self, App};
use crate::config::{self, LogFormat};
use crate::service::Origin;
use crate::service::accounts::AccountError;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "atelier",
    version,
    about = "A self-hosted AI generation studio and gateway"
)]
struct Cli {
    /// Configuration file (default: ./atelier.toml if it exists).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve {
        /// Answer with a built-in offline mock upstream instead of a real provider:
        /// every feature works with no key and no internet, and every output is fake.
        #[arg(long)]
        demo: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    PrintConfig,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage refresh tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage API keys.
    #[command(subcommand, name = "apikey")]
    ApiKey(ApiKeyCommand),
    /// Move between databases.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Copy every table of an embedded DuckDB deployment into an empty PostgreSQL
    /// database, then check the row counts. Stop the server using the file first.
    Copy {
        /// The DuckDB file: `duckdb://PATH`.
        #[arg(long, value_parser = parse_database_url)]
        from: DatabaseUrl,
        /// The PostgreSQL database: `postgres://user:password@host:port/database`.
        #[arg(long, value_parser = parse_database_url)]
        to: DatabaseUrl,
        /// Empty a target that has rows before copying (in the same transaction).
        #[arg(long)]
        replace: bool,
    },
}

fn parse_database_url(s: &str) -> Result<DatabaseUrl, String> {
    s.parse()
        .map_err(|e: atelier_store::DatabaseUrlError| e.to_string())
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "user", value_parser = parse_role)]
        role: Role,
    },
    /// List users.
    List {
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Only emails containing this text.
        #[arg(long)]
        email: Option<String>,
    },
    /// Change a user's role.
    SetRole {
        /// Email address or id.
        user: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Delete a user and end their sessions.
    Delete {
        /// Email address or id.
        user: String,
    },
    /// Show a user's budget, or change it with the options given (the others stay).
    Budget {
        /// Email address or id.
        user: String,
        /// USD per UTC day.
        #[arg(long)]
        daily_usd: Option<f64>,
        /// USD per UTC month.
        #[arg(long)]
        monthly_usd: Option<f64>,
        #[arg(long)]
        daily_requests: Option<u64>,
        #[arg(long)]
        monthly_requests: Option<u64>,
        /// Drop the user's own caps first: the role's defaults apply again.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create a key for a user and print it (this once).
    Create {
        /// Email address or id of the owner.
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// Comma-separated: chat, images, videos (default: all).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a user's live keys.
    List {
        /// Email address or id.
        user: String,
    },
    /// Revoke a key; it stops working at once.
    Revoke { id: Uuid },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Remove expired and revoked refresh tokens.
    Purge,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: atelier_store::UnknownRole| e.to_string())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The runtime is built as the configuration says, so it is read first.
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match crate::runtime::build(&loaded.settings.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::runtime::enter(&loaded.settings.runtime);
    match runtime.block_on(run(cli, loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, loaded: config::Loaded) -> anyhow::Result<()> {
    let settings = loaded.settings;
    let command = cli.command.unwrap_or(Command::Serve { demo: false });
    let serving = matches!(command, Command::Serve { .. });
    // Commands print their results; the log only says what went wrong.
    let filter = if serving {
        settings.log_level.as_str()
    } else {
        "warn"
    };
    telemetry::init(settings.log_format, filter);
    if serving {
        tracing::info!(
            "config: {}; {} from the environment; log format {}",
            loaded
                .file
                .as_ref()
                .map_or_else(|| "no file".to_owned(), |f| format!("file {}", f.display())),
            match loaded.env_keys.len() {
                0 => "no settings".to_owned(),
                _ => loaded.env_keys.join(", "),
            },
            match settings.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        );
    }

    match command {
        Command::PrintConfig => {
            print!("{}", settings.to_redacted_toml());
            Ok(())
        }
        Command::Migrate => {
            let (store, report) = app::open_store(&settings).await?;
            store.close().await?;
            println!(
                "{}: schema version {} ({} migration(s) applied)",
                settings.database_url, report.version, report.applied
            );
            Ok(())
        }
        Command::Serve { demo } => serve(settings, demo).await,
        Command::User(cmd) => {
            let state = App::build(settings).await?;
            let result = user_command(&state, cmd).await;
            state.shutdown().await;
            state.store.close().await?;
            result
        }
        Command::ApiKey(cmd) => {
            let state = App::build(settings).await?;
            let result = api_key_command(&state, cmd).await;
            state.shutdown().await;
            state.store.close().await?;
            result
        }
        Command::Db(DbCommand::Copy { from, to, replace }) => {
            let report = crate::dbcopy::copy(&from, &to, replace).await?;
            print!("{report}");
            println!("copied {from} to {to}");
            Ok(())
        }
        Command::Tokens(TokensCommand::Purge) => {
            let state = App::build(settings).await?;
            let purged = state.admin.purge_tokens(None, &Origin::cli()).await;
            state.shutdown().await;
            state.store.close().await?;
            println!("purged {} refresh token(s)", purged?);
            Ok(())
        }
    }
}

async fn serve(mut settings: config::Settings, demo: bool) -> anyhow::Result<()> {
    // Kept alive for as long as the server runs.
    let _mock = if demo {
        Some(start_demo_upstream(&mut settings).await?)
    } else {
        None
    };
    let bind = settings.bind;
    let state = App::build(settings).await?;
    state.bootstrap_admin().await?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| crate::error::StartupError::Bind { addr: bind, source })?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal();
    tracing::info!("http: listening on http://{addr} (API docs at http://{addr}/docs)");
    app::serve(state, listener, shutdown).await?;
    Ok(())
}

/// Starts the offline mock upstream on loopback and points the settings at it.
async fn start_demo_upstream(
    settings: &mut config::Settings,
) -> anyhow::Result<atelier_mock_upstream::MockUpstream> {
    let mock = atelier_mock_upstream::MockUpstream::start(atelier_mock_upstream::MockConfig {
        token_delay: std::time::Duration::from_millis(25),
        video_polls_per_state: 2,
        ..atelier_mock_upstream::MockConfig::default()
    })
    .await?;
    settings.demo = true;
    settings.upstream.base_url = mock.base_url();
    settings.upstream.api_key = Some(config::Secret::new(mock.api_key()));
    // Demo videos finish in seconds; poll accordingly.
    settings.video.poll_min_interval = std::time::Duration::from_secs(1);
    settings.video.poll_max_interval = std::time::Duration::from_secs(2);
    tracing::warn!(
        "DEMO MODE: answers come from a built-in mock upstream at {}; every output is fake and costs nothing",
        mock.base_url()
    );
    Ok(mock)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled: a signal that arrives as soon
/// as the server says it listens must already stop it gracefully.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

async fn user_command(state: &App, cmd: UserCommand) -> anyhow::Result<()> {
    let accounts = &state.accounts;
    let origin = Origin::cli();
    match cmd {
        UserCommand::Create { email, role } => {
            let password = read_password()?;
            let user = accounts
                .create_user(&email, &password, role, None, &origin)
                .await?;
            println!("created {} ({}) with id {}", user.email, user.role, user.id);
        }
        UserCommand::List { role, email } => {
            let mut after = None;
            println!("{:<36}  {:<6}  {:<25}  email", "id", "role", "created");
            loop {
                let page = accounts
                    .list_users(&UserQuery {
                        role,
                        email_contains: email.clone(),
                        after,
                        limit: 100,
                    })
                    .await?;
                for u in &page.users {
                    println!(
                        "{:<36}  {:<6}  {:<25}  {}",
                        u.id,
                        u.role,
                        u.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        u.email
                    );
                }
                after = page.users.last().map(|u| u.id);
                if !page.has_more {
                    break;
                }
            }
        }
        UserCommand::SetRole { user, role } => {
            let target = find_user(state, &user).await?;
            let updated = accounts.set_role(None, target.id, role, &origin).await?;
            println!("{} is now {}", updated.email, updated.role);
        }
        UserCommand::Delete { user } => {
            let target = find_user(state, &user).await?;
            accounts.delete_user(None, target.id, &origin).await?;
            println!("deleted {}", target.email);
        }
        UserCommand::Budget {
            user,
            daily_usd,
            monthly_usd,
            daily_requests,
            monthly_requests,
            clear,
        } => {
            let target = find_user(state, &user).await?;
            let changing = clear
                || daily_usd.is_some()
                || monthly_usd.is_some()
                || daily_requests.is_some()
                || monthly_requests.is_some();
            if changing {
                let mut body = if clear {
                    BudgetOverrideBody::default()
                } else {
                    api::keys::user_budget(state, target.id).await?.r#override
                };
                body.daily_usd = daily_usd.or(body.daily_usd);
                body.monthly_usd = monthly_usd.or(body.monthly_usd);
                body.daily_requests = daily_requests.or(body.daily_requests);
                body.monthly_requests = monthly_requests.or(body.monthly_requests);
                api::keys::set_budget(state, target.id, &body, None, &origin).await?;
            }
            let budget = api::keys::user_budget(state, target.id).await?.effective;
            println!("{} ({})", target.email, target.role);
            for (name, p) in [("today", &budget.daily), ("this month", &budget.monthly)] {
                println!(
                    "  {name:<10}  spent {:.4} USD of {}, {} request(s) of {}; resets {}",
                    p.spent_usd,
                    p.limit_usd.map_or("unlimited".into(), |l| format!("{l:.2} USD")),
                    p.requests,
                    p.request_limit.map_or("unlimited".into(), |l| l.to_string()),
                    p.resets_at.format("%Y-%m-%d %H:%M UTC"),
                );
            }
        }
    }
    Ok(())
}

async fn api_key_command(state: &App, cmd: ApiKeyCommand) -> anyhow::Result<()> {
    let origin = Origin::cli();
    match cmd {
        ApiKeyCommand::Create {
            user,
            name,
            scopes,
            expires_in_days,
        } => {
            let owner = find_user(state, &user).await?;
            let created = state
                .keys
                .create(owner.id, &name, &scopes, expires_in_days, &origin)
                .await?;
            eprintln!(
                "created key {} ({}) for {}; it is shown this once:",
                created.record.id, created.record.name, owner.email
            );
            println!("{}", created.key);
        }
        ApiKeyCommand::List { user } => {
            let owner = find_user(state, &user).await?;
            println!(
                "{:<36}  {:<22}  {:<20}  {:<17}  {:<17}  name",
                "id", "prefix", "scopes", "expires", "last used"
            );
            let when = |t: Option<chrono::DateTime<chrono::Utc>>, none: &str| {
                t.map_or_else(|| none.to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())
            };
            for k in state.keys.list(owner.id).await? {
                println!(
                    "{:<36}  {:<22}  {:<20}  {:<17}  {:<17}  {}",
                    k.id,
                    format!("atl_{}_…", k.public_id),
                    if k.scopes.is_empty() {
                        "all".to_owned()
                    } else {
                        k.scopes.join(",")
                    },
                    when(k.expires_at, "never"),
                    when(k.last_used_at, "never"),
                    k.name
                );
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let revoked = state.keys.revoke(id, None, &origin).await?;
            println!("revoked {} ({})", revoked.id, revoked.name);
        }
    }
    Ok(())
}

async fn find_user(state: &App, key: &str) -> Result<User, AccountError> {
    match Uuid::parse_str(key) {
        Ok(id) => state.accounts.user(id).await,
        Err(_) => state.accounts.user_by_email(key).await,
    }
}

/// Reads the password from standard input: prompted twice without echo on a
/// terminal, otherwise the first line. Never from an argument, where it would end
/// up in shell history and the process list.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Repeat password: ")?;
        anyhow::ensure!(first == second, "the passwords do not match");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    std::io::stdout().flush()?;
    Ok(password.to_owned())
}
