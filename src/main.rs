//! The `portcullis` binary: parses the command line, starts logging and hands over to
//! `app::run` (or validates a configuration). The only place that exits the process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use portcullis::authn::api_keys::{self, KeyEntry, KeyEnv, SecretHash};
use portcullis::config::keys_file;
use portcullis::revocation::redis::RedisConfig;
use portcullis::revocation::{
    self, ApiKeyEntry, JtiEntry, Revocation, RevocationList, SubjectEntry, Timestamp,
};
use portcullis::tools::{explain, policy_test};
use portcullis::{app, config, envoy_filter, telemetry};

// glibc's malloc was ~13% of the CPU of a check (perf, cache-hit checks pinned to one core):
// each check allocates and frees a few dozen small buffers (headers, protobuf strings, the
// response); mimalloc's thread-local free lists make those far cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--version`: the crate version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PORTCULLIS_GIT_SHA"),
    ")"
);

/// Authorization sidecar for Envoy's ext_authz filter.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version = VERSION, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve`'s options, also accepted without the subcommand (serve is the default).
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve ext_authz checks (the default command).
    Serve(ServeArgs),
    /// Validate a configuration file: prints "ok", or every problem as
    /// `file:line:column: path: message` and exits with status 1.
    CheckConfig {
        /// The configuration file to validate.
        file: PathBuf,
    },
    /// Print the Envoy `ext_authz` filter and the cluster that reaches portcullis, derived from
    /// a configuration: the header lists Envoy's HTTP mode needs (claim headers included) and
    /// the listener addresses.
    EnvoyFilter {
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Which ext_authz transport Envoy uses.
        #[arg(long, value_enum, default_value_t = FilterMode::Grpc)]
        mode: FilterMode,
    },
    /// Decide one request offline and print the reasoning: the normalized path and host, every
    /// route tried and why it did not match, each requirement of the matched route with pass or
    /// fail, and the outcome, status, reason and headers. No network: with --token the claims
    /// are decoded and checked but the signature is NOT verified.
    Explain(ExplainArgs),
    /// Run YAML policy test cases (requests, callers and the answers expected) against the
    /// configuration each file names. Exit status 0 when all pass, 1 on a mismatch, 2 when a
    /// file cannot be read.
    Test {
        /// Test files (`*.test.yaml`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make and check API key entries (the keys file holds hashes, never keys).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Revoke a token, a subject's tokens, a signing key or an API key: store the entry in
    /// Redis and publish it to every agent (`--redis`), or add it to the revocation file
    /// (written atomically, other entries kept); or list what is in force. Exits 0 only once
    /// the entry is stored (and published).
    Revoke(Box<RevokeArgs>),
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The request's method.
    #[arg(long, value_name = "M")]
    method: String,
    /// The request target: path and, optionally, query string.
    #[arg(long, value_name = "P")]
    path: String,
    /// The request's host (`:authority`).
    #[arg(long, value_name = "H", default_value = policy_test::DEFAULT_HOST)]
    host: String,
    /// A request header, `'Name: value'`; repeat for more.
    #[arg(long = "header", value_name = "K: V", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The caller's claims as a JSON object, mapped through the claim mapping of the issuer
    /// `iss` names (or the only issuer); nothing is verified.
    #[arg(long, value_name = "JSON", conflicts_with = "token", value_parser = parse_claims)]
    claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// The caller's JWT: decoded and checked, signature NOT verified. Without --claims or
    /// --token the caller is anonymous.
    #[arg(long, value_name = "JWT")]
    token: Option<String>,
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not `Name: value`"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{text}` has no header name"));
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_owned()))
}

fn parse_claims(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    serde_json::from_str(text).map_err(|error| format!("not a JSON object: {error}"))
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new key: prints the key once (on stderr) and the keys-file entry with its hash
    /// (on stdout, ready to append under `keys:`).
    Generate {
        /// The environment the key is for.
        #[arg(long, value_enum)]
        env: EnvArg,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Print the keys-file entry of an existing key (read from stdin when KEY is absent or
    /// `-`, which keeps it out of the shell history).
    Hash {
        key: Option<String>,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Validate a keys file: every problem as `file:line:column: path: message` (exit 1),
    /// expired entries and entries of another environment as warnings.
    Check {
        file: PathBuf,
        /// The environment the deployment accepts (warns about entries of the other).
        #[arg(long, value_enum)]
        env: Option<EnvArg>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EnvArg {
    Live,
    Test,
}

impl EnvArg {
    fn key_env(self) -> KeyEnv {
        match self {
            Self::Live => KeyEnv::Live,
            Self::Test => KeyEnv::Test,
        }
    }
}

/// What the entry says besides the key itself.
#[derive(Debug, Args)]
struct EntryArgs {
    /// The subject the key authenticates as (`x-auth-subject`).
    #[arg(long, default_value = "CHANGE-ME")]
    subject: String,
    /// Granted scopes (comma separated or repeated).
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
    /// Granted roles (comma separated or repeated).
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// When the key stops working: a duration from now (`90d`) or an RFC 3339 UTC time.
    #[arg(long)]
    expires: Option<String>,
    /// A note for operators (owner, purpose).
    #[arg(long)]
    description: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true)
    .args(["jti", "sub", "kid", "api_key", "list"])))]
struct RevokeArgs {
    /// The agent's configuration: checks `--issuer` against its issuers, gives a subject entry
    /// the issuer's `max_lifetime` as its expiry, and names the revocation file.
    #[arg(long, value_name = "FILE", env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    /// The revocation file to edit (default: the configuration's `revocation.file`, when it
    /// has no `revocation.redis`).
    #[arg(long, value_name = "PATH", conflicts_with = "redis")]
    file: Option<PathBuf>,
    /// The fleet's Redis, `redis://[user:password@]host:port[/db]` (default: the
    /// configuration's `revocation.redis.url`).
    #[arg(long, value_name = "URL", env = "PORTCULLIS_REDIS_URL")]
    redis: Option<String>,
    /// With a `rediss://` URL: the CA certificates (PEM) Redis's certificate must chain to
    /// (default: the configuration's `revocation.redis.ca_file`, else the system's roots).
    #[arg(long, value_name = "PATH")]
    redis_ca_file: Option<PathBuf>,
    /// With `--redis`: the channel agents listen on.
    #[arg(long, value_name = "NAME")]
    channel: Option<String>,
    /// With `--redis`: the prefix of the entries' keys.
    #[arg(long, value_name = "PREFIX")]
    key_prefix: Option<String>,
    /// A token, by its `jti` (needs `--expires`: the token's own `exp`).
    // Identifiers may begin with `-` (a base64url `jti` often does): taken as the value, not
    // as another option.
    #[arg(
        long,
        value_name = "ID",
        requires = "expires",
        allow_hyphen_values = true
    )]
    jti: Option<String>,
    /// Every token of this subject issued before `--before` (default: now, this second
    /// included).
    #[arg(
        long,
        value_name = "SUB",
        requires = "issuer",
        allow_hyphen_values = true
    )]
    sub: Option<String>,
    /// Every token signed with this key id.
    #[arg(
        long,
        value_name = "KID",
        requires = "issuer",
        allow_hyphen_values = true
    )]
    kid: Option<String>,
    /// An API key, by its id (the 12 characters after `pk_<env>_`; a whole key is accepted and
    /// only its id kept).
    #[arg(long, value_name = "ID")]
    api_key: Option<String>,
    /// The issuer (`iss`) of the subject or key.
    #[arg(long, value_name = "ISS")]
    issuer: Option<String>,
    /// With `--sub`: the cut-off, RFC 3339 UTC (2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", requires = "sub")]
    before: Option<String>,
    /// When the entry may be forgotten, RFC 3339 UTC: for `--jti` the token's expiry.
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
    /// Print the entries of the revocation file.
    #[arg(long)]
    list: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FilterMode {
    /// `grpc_service` to `server.grpc_listen`.
    Grpc,
    /// `http_service` to `server.http_listen`.
    Http,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE", env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::EnvoyFilter { config, mode }) => print_envoy_filter(&config, mode),
        Some(Command::Explain(args)) => print_explanation(args),
        Some(Command::Test { files }) => run_policy_tests(&files),
        Some(Command::Keys(command)) => keys(command),
        Some(Command::Revoke(args)) => match revoke(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("portcullis revoke: {error:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Serve(args)) => report(serve(args)),
        None => report(serve(cli.serve)),
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(config) => {
            for warning in envoy_filter::http_mode_warnings(&config) {
                eprintln!("{}: warning: {warning}", file.display());
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            for problem in &error.errors {
                eprintln!("{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

fn print_envoy_filter(file: &std::path::Path, mode: FilterMode) -> ExitCode {
    let config = match config::load(file) {
        Ok(config) => config,
        Err(error) => {
            for problem in &error.errors {
                eprintln!("{problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let mode = match mode {
        FilterMode::Grpc => envoy_filter::Mode::Grpc,
        FilterMode::Http => envoy_filter::Mode::Http,
    };
    match envoy_filter::render(&config, mode) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn print_explanation(args: ExplainArgs) -> ExitCode {
    let config = match config::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            for problem in &error.errors {
                eprintln!("{problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let request = explain::Request {
        method: args.method.to_ascii_uppercase(),
        path: args.path,
        host: args.host,
        headers: args.headers,
    };
    let caller = match (args.claims, args.token) {
        (Some(claims), _) => explain::Caller::Claims(claims),
        (None, Some(token)) => explain::Caller::Token(token),
        (None, None) => explain::Caller::Anonymous,
    };
    match explain::explain(&config, &request, &caller) {
        Ok(explanation) if args.json => {
            println!("{:#}", explanation.to_json());
            ExitCode::SUCCESS
        }
        Ok(explanation) => {
            print!("{}", explanation.render());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("portcullis explain: {error}");
            ExitCode::FAILURE
        }
    }
}

fn keys(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::Generate { env, entry } => print_entry(generate_entry(env, &entry)),
        KeysCommand::Hash { key, entry } => print_entry(hash_entry(key, &entry)),
        KeysCommand::Check { file, env } => check_keys(&file, env),
    }
}

fn print_entry(entry: anyhow::Result<KeyEntry>) -> ExitCode {
    match entry.and_then(|entry| keys_file::render_entry(&entry).map_err(anyhow::Error::from)) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("portcullis keys: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_policy_tests(files: &[PathBuf]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match policy_test::run(files, &mut out, &mut err) {
        Ok(summary) => ExitCode::from(summary.exit_code()),
        Err(error) => {
            eprintln!("portcullis test: {error}");
            ExitCode::from(2)
        }
    }
}

fn generate_entry(env: EnvArg, args: &EntryArgs) -> anyhow::Result<KeyEntry> {
    let generated = api_keys::generate(env.key_env())?;
    let entry = entry_from(&generated.id, generated.hash, env.key_env(), args)?;
    // stderr, so that stdout can be appended to the keys file as it is.
    eprintln!(
        "New API key (shown this once; portcullis keeps only its hash). Hand it to the client \
         over a secure channel:\n{}\n",
        generated.key
    );
    Ok(entry)
}

fn hash_entry(key: Option<String>, args: &EntryArgs) -> anyhow::Result<KeyEntry> {
    let key = match key.filter(|key| key != "-") {
        Some(key) => key,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the key from stdin")?;
            line.trim().to_owned()
        }
    };
    let parts = api_keys::parse(&key)
        .map_err(|problem| anyhow::anyhow!("not a valid API key ({})", problem.as_str()))?;
    entry_from(parts.id, SecretHash::of(parts.secret()), parts.env, args)
}

fn entry_from(
    id: &str,
    hash: SecretHash,
    env: KeyEnv,
    args: &EntryArgs,
) -> anyhow::Result<KeyEntry> {
    let not_after = match &args.expires {
        None => None,
        Some(text) => Some(expiry(text)?),
    };
    Ok(KeyEntry {
        id: id.to_owned(),
        hash,
        subject: args.subject.clone(),
        scopes: args.scopes.clone(),
        roles: args.roles.clone(),
        env,
        not_before: None,
        not_after,
        description: args.description.clone(),
    })
}

/// `--expires`: a duration from now or an RFC 3339 time, as Unix seconds.
fn expiry(text: &str) -> anyhow::Result<u64> {
    let at = match humantime::parse_duration(text) {
        Ok(duration) => std::time::SystemTime::now() + duration,
        Err(_) => humantime::parse_rfc3339(text).with_context(|| {
            format!("--expires `{text}`: expected a duration (`90d`) or an RFC 3339 UTC time")
        })?,
    };
    Ok(at.duration_since(std::time::UNIX_EPOCH)?.as_secs())
}

fn check_keys(file: &std::path::Path, env: Option<EnvArg>) -> ExitCode {
    match keys_file::load(file) {
        Ok(entries) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let warnings = keys_file::warnings(&entries, now, env.map(EnvArg::key_env));
            for warning in &warnings {
                eprintln!("{}: warning: {warning}", file.display());
            }
            println!("ok: {} keys, {} warnings", entries.len(), warnings.len());
            ExitCode::SUCCESS
        }
        Err(error) => {
            for problem in &error.errors {
                eprintln!("{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    // `rediss://` goes through rustls, with the provider the agent uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = match &args.config {
        Some(path) => Some(config::load(path).map_err(|error| anyhow::anyhow!("{error}"))?),
        None => None,
    };
    let configured = config.as_ref().and_then(|c| c.revocation.as_ref());
    let target = match (&args.file, &args.redis) {
        (Some(file), _) => Target::File(file.clone()),
        (None, Some(url)) => {
            let defaults = configured.and_then(|r| r.redis.as_ref());
            Target::Redis(RedisConfig {
                url: url.clone(),
                ca_file: args
                    .redis_ca_file
                    .clone()
                    .or_else(|| defaults.and_then(|d| d.ca_file.clone())),
                password_file: defaults.and_then(|d| d.password_file.clone()),
                channel: args
                    .channel
                    .clone()
                    .or_else(|| defaults.map(|d| d.channel.clone()))
                    .unwrap_or_else(|| revocation::redis::DEFAULT_CHANNEL.to_owned()),
                key_prefix: args
                    .key_prefix
                    .clone()
                    .or_else(|| defaults.map(|d| d.key_prefix.clone()))
                    .unwrap_or_else(|| revocation::redis::DEFAULT_KEY_PREFIX.to_owned()),
            })
        }
        (None, None) => match configured {
            Some(r) if r.redis.is_some() => Target::Redis(r.redis.clone().context("redis")?),
            Some(r) if r.file.is_some() => Target::File(r.file.clone().context("file")?),
            _ => anyhow::bail!("pass --redis URL, --file PATH, or --config FILE with revocation:"),
        },
    };
    if args.list {
        let list = match &target {
            Target::File(file) if !file.exists() => RevocationList::default(),
            Target::File(file) => revocation::file::load(file)?,
            Target::Redis(redis) => block_on(revocation::redis::list(redis))??,
        };
        print!("{}", serde_yaml_ng::to_string(&list)?);
        return Ok(());
    }
    let time = |text: &Option<String>| {
        text.as_deref()
            .map(Timestamp::parse)
            .transpose()
            .map_err(anyhow::Error::msg)
    };
    let expires = time(&args.expires)?;
    // The issuer must be one the agent knows: a typo would revoke nothing.
    let lifetime = match (&args.issuer, &config) {
        (Some(issuer), Some(config)) => {
            let known = config
                .issuers
                .iter()
                .find(|i| &i.issuer == issuer)
                .with_context(|| format!("`{issuer}` is not an issuer of the configuration"))?;
            known.max_lifetime.map(|l| l.as_secs())
        }
        (Some(_), None) => {
            eprintln!("portcullis revoke: warning: --issuer not checked (no --config)");
            None
        }
        _ => None,
    };
    let issuer = args.issuer.clone().unwrap_or_default();
    let revocation = if let Some(jti) = args.jti {
        let expires = expires.context("--jti needs --expires (the token's exp)")?;
        Revocation::Jti(JtiEntry { jti, expires })
    } else if let Some(sub) = args.sub {
        // Default: every token issued up to now, this second included (`iat` has a
        // resolution of one second, and the stolen token may be seconds old at most).
        let revoked_before = time(&args.before)?.unwrap_or_else(|| {
            let now = Timestamp::now();
            Timestamp(now.0 + 1)
        });
        let expires =
            expires.or_else(|| lifetime.map(|l| Timestamp(revoked_before.0.saturating_add(l))));
        Revocation::Subject(SubjectEntry {
            sub,
            issuer,
            revoked_before,
            expires,
        })
    } else if let Some(kid) = args.kid {
        Revocation::Key(revocation::KeyEntry {
            issuer,
            kid,
            expires,
        })
    } else if let Some(given) = args.api_key {
        Revocation::ApiKey(ApiKeyEntry {
            id: api_key_id(&given)?,
            expires,
        })
    } else {
        anyhow::bail!("nothing to revoke");
    };
    let mut added = RevocationList::default();
    added.add(revocation.clone());
    match target {
        Target::File(file) => {
            let mut list = if file.exists() {
                revocation::file::load(&file)?
            } else {
                RevocationList::default()
            };
            list.add(revocation);
            revocation::file::store(&file, &list)?;
            print!(
                "stored in {}:\n{}",
                file.display(),
                serde_yaml_ng::to_string(&added)?
            );
        }
        Target::Redis(redis) => {
            let agents = block_on(revocation::redis::publish(&redis, &revocation))??;
            print!(
                "stored in redis and published to {agents} agent(s):\n{}",
                serde_yaml_ng::to_string(&added)?
            );
        }
    }
    Ok(())
}

/// `--api-key`: the key's id (12 characters), or a whole key pasted by mistake, of which only
/// the id is kept (the key itself is never stored or printed).
fn api_key_id(given: &str) -> anyhow::Result<String> {
    if api_keys::is_key_id(given) {
        return Ok(given.to_owned());
    }
    match api_keys::parse(given) {
        Ok(parts) => Ok(parts.id.to_owned()),
        Err(_) => anyhow::bail!(
            "--api-key: give the key's id (the {} characters after `pk_<env>_`, as in the keys \
             file), not `{}`",
            api_keys::ID_LEN,
            if given.starts_with("pk_") {
                "a malformed key"
            } else {
                given
            }
        ),
    }
}

/// Where `portcullis revoke` stores the entry.
enum Target {
    File(PathBuf),
    Redis(RedisConfig),
}

/// Runs one future to completion on a small runtime (the CLI has no other async work).
fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args
        .config
        .context("no configuration file: pass --config FILE or set PORTCULLIS_CONFIG")?;
    let logging = telemetry::LogSettings::from_env()?;
    telemetry::init_logging(&logging)?;
    raise_descriptor_limit();
    let runtime = runtime().context("cannot start the async runtime")?;
    runtime.block_on(app::run(config))?;
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: each connection is a descriptor, and the
/// soft limit is often 1,024 although the hard one allows far more. A failure is logged and
/// serving goes on with the limit as it is.
fn raise_descriptor_limit() {
    let before = match rlimit::Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit (RLIMIT_NOFILE)");
            return;
        }
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => tracing::info!(
            soft_before = before.0,
            soft,
            hard = before.1,
            "open-file limit (RLIMIT_NOFILE): soft {} -> {soft}, hard {}",
            before.0,
            before.1
        ),
        Err(error) => tracing::warn!(
            %error,
            soft = before.0,
            hard = before.1,
            "cannot raise the open-file limit (RLIMIT_NOFILE) to the hard limit"
        ),
    }
}

/// The async runtime: one thread when the process may use one CPU only (e.g. pinned beside
/// Envoy with `taskset`), else one worker per CPU. On one CPU a multi-threaded runtime only
/// adds hand-offs: its single worker runs a woken task next (the LIFO slot), so the HTTP/2
/// connection task is flushed after every step of every stream, two socket writes per check;
/// the single-threaded runtime queues wakes in order and answers a burst of checks with a few.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let one_cpu = std::thread::available_parallelism().map_or(true, |n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Logging may not be up (or may be filtered): the reason goes to stderr as well.
            tracing::error!("{error:#}");
            eprintln!("portcullis: {error:#}");
            ExitCode::FAILURE
        }
    };
    // Log lines are buffered (the audit events above all): none may be lost at exit.
    telemetry::flush_logs();
    code
}
