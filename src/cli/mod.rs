//! The command line: `serve`, `check-config`, `token`, `user`, `keys`, `policy check`.
//! `main` stays thin: parse, load config (exit 64 when bad), run the command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::identity::{Names, local_user_name};
use crate::mint::MintError;
use crate::serve::StartError;
use crate::server::BuildError;
use crate::store::{self, Store};
use crate::telemetry::AccessLog;
use crate::telemetry::LogConfig;

/// Exit code for a bad configuration (EX_USAGE).
mod commands;
mod migrate;

use commands::{keys, policy_check, token, user, whoami};
use migrate::store_migrate;

const EXIT_CONFIG: u8 = 64;
/// Exit code for bad command input (EX_DATAERR).
const EXIT_INPUT: u8 = 65;
/// Exit code for a store file a command will not create (EX_CANTCREAT).
const EXIT_CANTCREAT: u8 = 73;
/// Threads for blocking work (store queries, password hashing, name resolution).
const BLOCKING_THREADS: usize = 8;

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authentication gateway for reverse proxies"
)]
struct Cli {
    /// YAML configuration file (built-in defaults when absent).
    #[arg(long, global = true, env = "AUTHGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Create, list and revoke API tokens.
    Token {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage local users (the `basic` provider).
    User {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List and rotate signing keys.
    Keys {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ask the route policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask a running authgate who a credential is (its `GET /whoami`): the identity as the
    /// policy sees it, as JSON. Exit 0 when valid, 1 when not (401/403), 69 when it could not
    /// be asked.
    Whoami {
        /// The token (sent as Bearer); `-` reads it from stdin (keeps it out of `ps`).
        #[arg(long)]
        token: String,
        /// The server's base URL; default: `http://` and `server.listen` (127.0.0.1 for an
        /// unspecified address).
        #[arg(long)]
        url: Option<String>,
    },
    /// Move state between stores.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy tokens, users and signing keys from an embedded store file into a Redis store
    /// (idempotent: what the Redis store has already is left alone). The Redis store's other
    /// settings (password_file, ca_file, prefix, timeout) come from the configuration's
    /// `store` section when it is a Redis one.
    Migrate {
        /// The embedded store file (SQLite) to copy from; it is only read.
        #[arg(long)]
        from: PathBuf,
        /// The Redis URL to copy to (redis:// or rediss://).
        #[arg(long)]
        to: String,
    },
}

/// How a command that changes the store opens it.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Create the store file when it is missing even though a running server holds the
    /// store (`<store>.lock`). Without it the command refuses (exit 73): a missing file
    /// under a running server was deleted or moved, and a new one starts empty.
    #[arg(long, global = true)]
    create: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is printed once, on stdout.
    Create {
        /// Subject the token acts for: a local user, or the name of a service (stored in
        /// NFKC form; no ':', ',', control characters or whitespace at the ends).
        #[arg(long)]
        user: String,
        /// Label.
        #[arg(long, default_value = "")]
        name: String,
        /// Scopes (comma separated); without it the token acts for the user in full (all
        /// scopes, all the user's roles).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// Roles the token holds (comma separated). For a local user, a subset of the
        /// user's roles; a scoped token holds none unless named here. For a service
        /// subject, the roles it is granted.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Extra attribute, key=value (repeatable).
        #[arg(long = "attr")]
        attributes: Vec<String>,
        /// Lifetime, e.g. 30d, 12h (no expiry when absent).
        #[arg(long)]
        expires: Option<humantime::Duration>,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this owner's tokens.
        #[arg(long)]
        user: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id, or by secret read from stdin.
    Revoke {
        /// Token id (tok_...).
        #[arg(required_unless_present = "secret_stdin")]
        id: Option<String>,
        /// Read the token secret from stdin instead.
        #[arg(long, conflicts_with = "id")]
        secret_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from stdin.
    Add {
        /// Login name, stored in NFKC form (`ｒｏｏｔ` becomes `root`); no ':', ',', control or
        /// invisible characters, or whitespace at the ends.
        username: String,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Roles (comma separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Attribute, key=value (repeatable).
        #[arg(long = "attr")]
        attributes: Vec<String>,
    },
    /// Set a user's password (read from stdin).
    Passwd {
        /// Login name, exactly as stored (`user list`).
        username: String,
    },
    /// Remove a user and revoke their tokens.
    Remove {
        /// Login name, exactly as stored (`user list`).
        username: String,
    },
    /// List users.
    List,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List published signing keys and their states (next, active, retiring).
    List,
    /// Generate a new signing key: published at once, it signs after `mint.rotation_lead`;
    /// the current key stays published until its JWTs expire.
    Rotate {
        /// Sign with the new key at once (emergency: a leaked key). Verifiers that cached
        /// the JWKS refuse the new JWTs (401) until they fetch it again, typically up to a
        /// few minutes.
        #[arg(long)]
        now: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Would this identity reach this URL?
    Check {
        /// A local user (their roles and attributes are used); absent: no credential.
        #[arg(long)]
        user: Option<String>,
        /// Extra roles (comma separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Act as a token with these scopes (comma separated); absent: all scopes.
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// Extra attribute, key=value (repeatable).
        #[arg(long = "attr")]
        attributes: Vec<String>,
        /// HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The URL, e.g. https://api.example.org/data.
        #[arg(long)]
        url: String,
    },
}

/// A command that failed, with the exit code it deserves.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<store::StoreError> for Failure {
    fn from(e: store::StoreError) -> Self {
        Self::new(1, e.to_string())
    }
}

impl From<StartError> for Failure {
    fn from(e: StartError) -> Self {
        let code = match &e {
            StartError::Build(BuildError::Mint(MintError::Key(_)) | BuildError::Config(_)) => {
                EXIT_CONFIG
            }
            _ => 1,
        };
        Self::new(code, e.to_string())
    }
}

impl From<MintError> for Failure {
    fn from(e: MintError) -> Self {
        StartError::Build(BuildError::Mint(e)).into()
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let logging = if matches!(cli.command, Command::Serve) {
        crate::telemetry::init(&config.log)
    } else {
        crate::telemetry::init(&LogConfig {
            level: "warn".to_owned(),
            ..config.log.clone()
        })
    };
    // Blocking work is the store's pool (4 connections) and name resolution (argon2 has
    // threads of its own, in `providers::basic`): a few threads do it all. Tokio's default
    // (up to 512, each kept 10 s) grew ~40 threads under load, each with its own malloc
    // arena (+60% RSS, measured).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let access = logging.access.clone();
    let outcome = runtime.block_on(run(cli.command, config, access));
    // The log lines of the run are written before the reason of a failure.
    drop(runtime);
    drop(logging);
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("authgate: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(command: Command, config: Config, access: AccessLog) -> Result<u8, Failure> {
    match command {
        Command::Serve => {
            crate::serve::serve(config, access).await?;
            Ok(0)
        }
        Command::CheckConfig => {
            for path in &config.mint.key_files {
                crate::mint::SigningKey::from_pem_file(config.mint.algorithm, path)
                    .map_err(|e| Failure::new(EXIT_CONFIG, e.to_string()))?;
            }
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            println!("configuration is valid");
            Ok(0)
        }
        Command::Token { store, command } => token(command, &config, store.create).await,
        Command::User { store, command } => user(command, &config, store.create).await,
        Command::Keys { store, command } => keys(command, &config, store.create).await,
        Command::Policy(PolicyCommand::Check {
            user,
            roles,
            scopes,
            attributes,
            method,
            url,
        }) => policy_check(&config, user, roles, scopes, attributes, &method, &url).await,
        Command::Store(StoreCommand::Migrate { from, to }) => {
            store_migrate(&config, &from, to).await
        }
        Command::Whoami { token, url } => whoami(&config, &token, url.as_deref()).await,
    }
}

/// Opens the store for a command. A missing embedded store file is created only when no
/// server holds the store, or when `create` says to: a server would not answer from a new
/// file it did not open, and the missing one was most likely deleted or moved under it.
fn open_store(config: &Config, create: bool) -> Result<Arc<dyn Store>, Failure> {
    if let store::StoreConfig::Embedded { path } = &config.store
        && !create
        && !path.exists()
    {
        let held = store::held_by_server(path).map_err(|e| {
            Failure::new(
                EXIT_CANTCREAT,
                format!(
                    "the store file {} does not exist, and whether a server holds it cannot be told ({}: {e}); pass --create to create it",
                    path.display(),
                    store::lock_path(path).display()
                ),
            )
        })?;
        if held {
            return Err(Failure::new(
                EXIT_CANTCREAT,
                format!(
                    "the store file {} does not exist, but a running server holds the store ({}): \
                     it was deleted or moved under the server. Put it back, or pass --create to \
                     create an empty store",
                    path.display(),
                    store::lock_path(path).display()
                ),
            ));
        }
    }
    Ok(store::open_for_command(&config.store)?)
}

fn input_err(message: impl Into<String>) -> Failure {
    Failure::new(EXIT_INPUT, message)
}

/// `name` (of a new user, or a token's owner) in the NFKC form it is stored in, or exit 65
/// naming the problem (see [`local_user_name`]). Storing the NFKC form rather than refusing
/// a name that is not in it makes `ｒｏｏｔ` the same account as `root`, as a Basic login
/// by that name is; the operator is told when the name changed.
fn user_name_arg(what: &str, name: &str) -> Result<String, Failure> {
    let normal = local_user_name(name)
        .map_err(|e| input_err(format!("{what} '{}': {e}", name.escape_debug())))?;
    if normal != name {
        eprintln!(
            "note: {what} '{}' is stored in its NFKC form '{normal}'",
            name.escape_debug()
        );
    }
    Ok(normal)
}

fn join(items: &Names) -> String {
    items.iter().collect::<Vec<_>>().join(",")
}

fn time_or(at: Option<i64>, none: &str) -> String {
    match at {
        Some(t) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
                .to_string()
        }
        None => none.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "authgate",
            "token",
            "create",
            "--user",
            "alice",
            "--scopes",
            "read:data,write:data",
            "--expires",
            "30d",
        ])
        .unwrap();
        match cli.command {
            Command::Token {
                command:
                    TokenCommand::Create {
                        user,
                        scopes,
                        expires,
                        ..
                    },
                store,
            } => {
                assert!(!store.create);
                assert_eq!(user, "alice");
                assert_eq!(scopes.unwrap(), vec!["read:data", "write:data"]);
                assert_eq!(
                    Duration::from(expires.unwrap()),
                    Duration::from_secs(30 * 86400)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["authgate", "token", "revoke"]).is_err());
    }
}
