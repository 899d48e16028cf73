//! The `token`, `user`, `keys` and `policy check` subcommands.

use crate::config::Config;
use crate::identity::{Identity, Names, attributes_from_pairs};
use crate::mint::{KEY_RELOAD_INTERVAL, Minter, rotate};
use crate::policy::{Decision, Target};
use crate::providers::hash_password;
use crate::secret::{Secret, generate_api_token, random_id, sha256};
use crate::store::{self, StoreConfig, TokenRecord, TokenRef, UserRecord};
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use super::{
    Failure, KeysCommand, TokenCommand, UserCommand, input_err, join, open_store, time_or,
    user_name_arg,
};

pub(super) async fn token(
    command: TokenCommand,
    config: &Config,
    create: bool,
) -> Result<u8, Failure> {
    let store = open_store(config, create)?;
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
            let attributes =
                attributes_from_pairs(&attributes).map_err(|e| input_err(e.to_string()))?;
            // A token never holds more than its owner: refuse roles a local user lacks.
            if let Some(owner) = store.get_user(&user).await?
                && let Some(missing) = roles.iter().find(|r| !owner.roles.contains(r))
            {
                return Err(input_err(format!(
                    "user {user} does not hold the role {missing}; a token holds a subset of its owner's roles"
                )));
            }
            // The minted JWT lists scopes space-separated (RFC 6749 scope tokens).
            if let Some(bad) = scopes
                .iter()
                .flatten()
                .find(|s| s.contains(char::is_whitespace) || s.contains(['"', '\\']))
            {
                return Err(input_err(format!(
                    "scope '{bad}' contains whitespace, '\"' or '\\'"
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
            match &config.store {
                // Published on the store's event channel: every replica drops it at once.
                StoreConfig::Redis { .. } => {
                    eprintln!("revoked; every running server stops accepting it at once")
                }
                // A server on the same file hears nothing: its cached answer stands until
                // the entry ends.
                StoreConfig::Embedded { .. } => eprintln!(
                    "revoked; running servers stop accepting it within cache.max_ttl ({})",
                    humantime::format_duration(config.cache.max_ttl)
                ),
            }
            Ok(0)
        }
    }
}

pub(super) async fn user(
    command: UserCommand,
    config: &Config,
    create: bool,
) -> Result<u8, Failure> {
    let store = open_store(config, create)?;
    let now = crate::unix_now();
    match command {
        UserCommand::Add {
            username,
            email,
            roles,
            attributes,
        } => {
            let username = user_name_arg("the user name", &username)?;
            let attributes =
                attributes_from_pairs(&attributes).map_err(|e| input_err(e.to_string()))?;
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

pub(super) async fn keys(
    command: KeysCommand,
    config: &Config,
    create: bool,
) -> Result<u8, Failure> {
    let store = open_store(config, create)?;
    match command {
        KeysCommand::List => {
            let minter = Minter::new(&config.mint, store.as_ref(), false).await?;
            let ring = minter.ring();
            println!(
                "{:<44} {:<6} {:<9} {:<20} PUBLISHED UNTIL",
                "KID", "ALG", "STATE", "SIGNS FROM"
            );
            for key in ring.keys() {
                println!(
                    "{:<44} {:<6} {:<9} {:<20} {}",
                    key.key.kid,
                    key.key.algorithm.as_str(),
                    key.state.as_str(),
                    time_or(key.activates_at, "-"),
                    time_or(key.publish_until, "-"),
                );
            }
            Ok(0)
        }
        KeysCommand::Rotate { now: immediate } => {
            let now = crate::unix_now();
            let rotation = rotate(&config.mint, store.as_ref(), now, immediate).await?;
            println!("{}", rotation.kid);
            let previous = time_or(Some(rotation.previous_published_until), "-");
            if immediate {
                eprintln!(
                    "new {} key signs now (running servers switch within {} s); verifiers that \
                     cached the JWKS refuse its JWTs until they fetch it again; the previous key \
                     stays published until {previous}",
                    rotation.algorithm.as_str(),
                    KEY_RELOAD_INTERVAL.as_secs(),
                );
            } else {
                eprintln!(
                    "new {} key is published (running servers within {} s) and signs from {} \
                     (mint.rotation_lead); the current key stays published until {previous}",
                    rotation.algorithm.as_str(),
                    KEY_RELOAD_INTERVAL.as_secs(),
                    time_or(Some(rotation.activates_at), "-"),
                );
            }
            Ok(0)
        }
    }
}

pub(super) async fn policy_check(
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
            let store = open_store(config, false)?;
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
                client_id: None,
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
                .extend(attributes_from_pairs(&attributes).map_err(|e| input_err(e.to_string()))?);
            Some(augmented(config, identity).await?)
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

/// `identity` after the augmenters that apply to local users (`basic`), as a decision
/// would see it; what they added is shown on stderr.
async fn augmented(config: &Config, identity: Identity) -> Result<Identity, Failure> {
    if config.augment.0.is_empty() {
        return Ok(identity);
    }
    let augmenters = crate::augment::Augmenters::build(&config.augment, config.cache.max_ttl)
        .map_err(|e| Failure::new(1, e.to_string()))?;
    let before = identity.roles.clone();
    let answer = crate::providers::Answer {
        identity: Identity {
            provider: crate::providers::BasicProvider::KIND,
            ..identity
        },
        cache_ttl: None,
    };
    let mut identity = augmenters
        .apply(answer)
        .await
        .map_err(|e| Failure::new(1, format!("augment: {e}")))?
        .identity;
    let added: Vec<&str> = identity
        .roles
        .iter()
        .filter(|r| !before.contains(r))
        .collect();
    eprintln!(
        "note: roles after augment: {}",
        identity.roles.iter().collect::<Vec<_>>().join(", ")
    );
    if !added.is_empty() {
        eprintln!("note: added by augment: {}", added.join(", "));
    }
    identity.provider = "cli";
    Ok(identity)
}

/// `authgate whoami`: the running server's `GET /whoami` for `token`.
pub(super) async fn whoami(config: &Config, token: &str, url: Option<&str>) -> Result<u8, Failure> {
    /// EX_UNAVAILABLE.
    const EXIT_UNAVAILABLE: u8 = 69;
    let token = match token {
        "-" => read_secret("Token: ")?,
        t => Secret::new(t),
    };
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let mut listen = config.server.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{listen}")
        }
    };
    let unavailable = |e: String| Failure::new(EXIT_UNAVAILABLE, e);
    let response = reqwest::Client::new()
        .get(format!("{base}/whoami"))
        .bearer_auth(token.expose())
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| unavailable(format!("cannot ask {base}: {}", e.without_url())))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| unavailable(format!("{base} answer cut short: {e}")))?;
    println!("{body}");
    match status.as_u16() {
        200 => Ok(0),
        401 | 403 => Ok(1),
        other => Err(unavailable(format!("{base} answered {other}"))),
    }
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
