//! The command line: `serve`, `check-config`, `token`, `user`, `keys`, `policy check`.
//! `main` stays thin: parse, load config (exit 64 when bad), run the command.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::identity::{Identity, Names, attributes_from_pairs, local_user_name};
use crate::mint::{MintError, Minter, generate_key_record, publish_until};
use crate::policy::{Decision, Target};
use crate::providers::hash_password;
use crate::secret::{Secret, generate_api_token, random_id, sha256};
use crate::server::StartError;
use crate::store::{self, Store, TokenRecord, TokenRef, UserRecord};
use crate::telemetry::AccessLog;
use crate::telemetry::LogConfig;

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code for bad command input (EX_DATAERR).
const EXIT_INPUT: u8 = 65;
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
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage local users (the `basic` provider).
    #[command(subcommand)]
    User(UserCommand),
    /// List and rotate signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Ask the route policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
    /// List published signing keys.
    List,
    /// Generate a new signing key; the old one stays published until its JWTs expire.
    Rotate,
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
            StartError::Mint(MintError::Key(_)) | StartError::Config(_) => EXIT_CONFIG,
            _ => 1,
        };
        Self::new(code, e.to_string())
    }
}

impl From<MintError> for Failure {
    fn from(e: MintError) -> Self {
        StartError::Mint(e).into()
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
    // Blocking work is the store's pool (4 connections), argon2 (one per core) and name
    // resolution: a few threads do it all. Tokio's default (up to 512, each kept 10 s)
    // grew ~40 threads under load, each with its own malloc arena (+60% RSS, measured).
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
    match runtime.block_on(run(cli.command, config, access)) {
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
            crate::server::serve(config, access).await?;
            Ok(0)
        }
        Command::CheckConfig => {
            for path in &config.mint.key_files {
                crate::mint::SigningKey::from_pem_file(config.mint.algorithm, path)
                    .map_err(|e| Failure::new(EXIT_CONFIG, e.to_string()))?;
            }
            println!("configuration is valid");
            Ok(0)
        }
        Command::Token(c) => token(c, &config).await,
        Command::User(c) => user(c, &config).await,
        Command::Keys(c) => keys(c, &config).await,
        Command::Policy(PolicyCommand::Check {
            user,
            roles,
            scopes,
            attributes,
            method,
            url,
        }) => policy_check(&config, user, roles, scopes, attributes, &method, &url).await,
    }
}

fn open_store(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    Ok(store::open(&config.store)?)
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

async fn token(command: TokenCommand, config: &Config) -> Result<u8, Failure> {
    let store = open_store(config)?;
    let now = crate::unix_now();
    match command {
        TokenCommand::Create {
            user,
            name,
            scopes,
            roles,
            attributes,
            expires,
        } => {
            let user = user_name_arg("--user", &user)?;
            let attributes = attributes_from_pairs(&attributes).map_err(input_err)?;
            // A token never holds more than its owner: refuse roles a local user lacks.
            if let Some(owner) = store.get_user(&user).await?
                && let Some(missing) = roles.iter().find(|r| !owner.roles.contains(r))
            {
                return Err(input_err(format!(
                    "user {user} does not hold the role {missing}; a token holds a subset of its owner's roles"
                )));
            }
            let secret = generate_api_token().map_err(|e| Failure::new(1, e.to_string()))?;
            let expires_at = expires.map(|d| now + Duration::from(d).as_secs() as i64);
            let record = TokenRecord {
                id: random_id("tok_").map_err(|e| Failure::new(1, e.to_string()))?,
                hash: sha256(secret.expose().as_bytes()),
                owner: user,
                name,
                roles: roles.into_iter().collect(),
                attributes,
                scopes: scopes.map(|s| s.into_iter().filter(|s| !s.is_empty()).collect()),
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
            };
            store.insert_token(&record).await?;
            println!("{}", secret.expose());
            eprintln!(
                "created token {} for {} (scopes: {}, expires: {}); the secret above is shown only once",
                record.id,
                record.owner,
                record.scopes.as_ref().map_or("all".to_owned(), join),
                time_or(expires_at, "never"),
            );
            Ok(0)
        }
        TokenCommand::List { user, json } => {
            let tokens = store.list_tokens(user.as_deref()).await?;
            if json {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({"id": t.id, "owner": t.owner, "name": t.name,
                            "roles": t.roles, "scopes": t.scopes, "attributes": t.attributes,
                            "created_at": t.created_at, "expires_at": t.expires_at,
                            "last_used_at": t.last_used_at, "revoked_at": t.revoked_at})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<20} {:<16} {:<16} {:<24} {:<20} {:<20} {:<20} STATUS",
                    "ID", "OWNER", "NAME", "SCOPES", "CREATED", "EXPIRES", "LAST USED"
                );
                for t in &tokens {
                    let status = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at.is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<20} {:<16} {:<16} {:<24} {:<20} {:<20} {:<20} {status}",
                        t.id,
                        t.owner,
                        t.name,
                        t.scopes.as_ref().map_or("all".to_owned(), join),
                        time_or(Some(t.created_at), "-"),
                        time_or(t.expires_at, "never"),
                        time_or(t.last_used_at, "never"),
                    );
                }
            }
            Ok(0)
        }
        TokenCommand::Revoke { id, secret_stdin } => {
            let revoked = if secret_stdin {
                let secret = read_secret("Token: ")?;
                store
                    .revoke_token(TokenRef::Hash(&sha256(secret.expose().as_bytes())), now)
                    .await?
            } else {
                let id = id.ok_or_else(|| input_err("give a token id or --secret-stdin"))?;
                store.revoke_token(TokenRef::Id(&id), now).await?
            };
            if !revoked {
                return Err(input_err("no such active token"));
            }
            eprintln!(
                "revoked; running servers stop accepting it within cache.max_ttl ({})",
                humantime::format_duration(config.cache.max_ttl)
            );
            Ok(0)
        }
    }
}

async fn user(command: UserCommand, config: &Config) -> Result<u8, Failure> {
    let store = open_store(config)?;
    let now = crate::unix_now();
    match command {
        UserCommand::Add {
            username,
            email,
            roles,
            attributes,
        } => {
            let username = user_name_arg("the user name", &username)?;
            let attributes = attributes_from_pairs(&attributes).map_err(input_err)?;
            let password_hash = new_password_hash()?;
            store
                .insert_user(&UserRecord {
                    username: username.clone(),
                    password_hash,
                    email,
                    roles: roles.into_iter().collect(),
                    attributes,
                    created_at: now,
                })
                .await
                .map_err(|e| match e {
                    store::StoreError::Exists(_) => input_err(e.to_string()),
                    e => e.into(),
                })?;
            eprintln!("added user {username}");
            Ok(0)
        }
        UserCommand::Passwd { username } => {
            let password_hash = new_password_hash()?;
            if !store.set_password(&username, &password_hash).await? {
                return Err(input_err(format!("no user '{username}'")));
            }
            eprintln!("password of {username} changed");
            Ok(0)
        }
        UserCommand::Remove { username } => {
            if !store.remove_user(&username, now).await? {
                return Err(input_err(format!("no user '{username}'")));
            }
            eprintln!("removed user {username} and revoked their tokens");
            Ok(0)
        }
        UserCommand::List => {
            println!("{:<24} {:<32} {:<32} CREATED", "USER", "EMAIL", "ROLES");
            for u in store.list_users().await? {
                println!(
                    "{:<24} {:<32} {:<32} {}",
                    u.username,
                    u.email.as_deref().unwrap_or("-"),
                    join(&u.roles),
                    time_or(Some(u.created_at), "-")
                );
            }
            Ok(0)
        }
    }
}

async fn keys(command: KeysCommand, config: &Config) -> Result<u8, Failure> {
    let store = open_store(config)?;
    match command {
        KeysCommand::List => {
            let minter = Minter::new(&config.mint, store.as_ref(), false).await?;
            let ring = minter.ring();
            let records = store.keys(crate::unix_now()).await?;
            println!("{:<44} {:<6} {:<8} PUBLISHED UNTIL", "KID", "ALG", "STATE");
            for key in &ring.published {
                let record = records.iter().find(|r| r.kid == key.kid);
                let active = key.kid == ring.active.kid;
                println!(
                    "{:<44} {:<6} {:<8} {}",
                    key.kid,
                    key.algorithm.as_str(),
                    if active { "active" } else { "retired" },
                    time_or(record.and_then(|r| r.publish_until), "-"),
                );
            }
            Ok(0)
        }
        KeysCommand::Rotate => {
            if !config.mint.key_files.is_empty() {
                return Err(MintError::FileKeys.into());
            }
            let now = crate::unix_now();
            let record = generate_key_record(config.mint.algorithm, now)
                .map_err(|e| Failure::new(1, e.to_string()))?;
            let ttl = config.mint.ttl.as_secs() as i64;
            store
                .rotate_key(&record, publish_until(now, ttl), false)
                .await?;
            println!("{}", record.kid);
            eprintln!(
                "new {} key is active; running servers switch within {} s, and the previous key stays published until {}",
                record.algorithm,
                crate::mint::KEY_RELOAD_INTERVAL.as_secs(),
                time_or(Some(publish_until(now, ttl)), "-"),
            );
            Ok(0)
        }
    }
}

async fn policy_check(
    config: &Config,
    user: Option<String>,
    roles: Vec<String>,
    scopes: Option<Vec<String>>,
    attributes: Vec<String>,
    method: &str,
    url: &str,
) -> Result<u8, Failure> {
    let policy = &config.policy;
    let uri: http::Uri = url
        .parse()
        .map_err(|_| input_err(format!("'{url}' is not a URL")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| input_err(format!("'{url}' has no host")))?;
    let (host, _port) = crate::forward::target::host_and_port(authority.as_str(), "the URL's host")
        .map_err(|e| input_err(e.to_string()))?;
    let path =
        crate::forward::target::judged_path(uri.path()).map_err(|e| input_err(e.to_string()))?;
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| input_err(format!("'{method}' is not an HTTP method")))?;
    let identity = match user {
        None => None,
        Some(name) => {
            let store = open_store(config)?;
            let found = store.get_user(&name).await?;
            let mut identity = Identity {
                subject: name.clone(),
                native_id: None,
                provider: "cli",
                username: name.clone(),
                email: None,
                roles: Names::default(),
                attributes: Default::default(),
                scopes: scopes.map(|s| s.into_iter().collect()),
                expires_at: None,
                credential_id: None,
            };
            match found {
                Some(u) => {
                    identity.roles = u.roles;
                    identity.attributes = u.attributes;
                    identity.email = u.email;
                }
                None => eprintln!(
                    "note: '{name}' is not a local user; using only the roles and attributes given"
                ),
            }
            identity.roles = identity.roles.union(&roles.into_iter().collect());
            identity
                .attributes
                .extend(attributes_from_pairs(&attributes).map_err(input_err)?);
            Some(identity)
        }
    };
    let target = Target {
        method: &method,
        host: &host,
        path: &path,
    };
    let (line, code) = match policy.evaluate(&target, identity.as_ref()) {
        Decision::Allow { rule, audience } => (
            format!(
                "allow (rule: {}, audience: {})",
                rule.as_deref().unwrap_or("default"),
                audience.as_deref().unwrap_or(&config.mint.audience)
            ),
            0,
        ),
        Decision::AllowAnonymous { rule } => (format!("allow anonymous (rule: {rule})"), 0),
        Decision::Unauthenticated => (
            "unauthenticated: a valid credential is needed (401)".to_owned(),
            1,
        ),
        Decision::Deny { rule, missing } => {
            (format!("deny (rule: {rule}): missing {missing} (403)"), 1)
        }
    };
    println!("{line}");
    Ok(code)
}

/// Reads one line from stdin (prompting on a terminal); the trailing newline is dropped.
fn read_secret(prompt: &str) -> Result<Secret, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| input_err(format!("cannot read stdin: {e}")))?;
    let value = line.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(input_err("nothing was read from stdin"));
    }
    Ok(Secret::new(value))
}

fn new_password_hash() -> Result<String, Failure> {
    let password = read_secret("Password: ")?;
    if password.expose().chars().count() < 8 {
        return Err(input_err("the password must have at least 8 characters"));
    }
    hash_password(&password).map_err(|e| Failure::new(1, format!("cannot hash the password: {e}")))
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
            Command::Token(TokenCommand::Create {
                user,
                scopes,
                expires,
                ..
            }) => {
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
