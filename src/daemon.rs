//! Wires the parts together: configuration, store, one watcher per chain, the webhook
//! sender, the admin socket; and stops them all on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::api::{self, Api};
use crate::chain::Chain;
use crate::chains::{Kind, Policy};
use crate::config::{LogFormat, Settings};
use crate::store::{Outbox, Store};
use crate::{admin, bitcoin, evm, heads, service, telemetry, watcher, webhook, zmq};

/// Runs the daemon with the configuration at `config` until a signal stops it.
pub fn main(config: &Path) -> anyhow::Result<()> {
    let (settings, _) = Settings::load(config)?;
    init_logging(settings.log_format);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping");
            signals.cancel();
        });
        run(settings, shutdown).await
    })
}

/// Runs until `shutdown` is cancelled; tests call this directly.
pub(crate) async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "daemon.data_dir: cannot create {}: {e}",
            settings.data_dir.display()
        )
    })?;
    let policies: HashMap<String, Policy> = settings
        .chains
        .iter()
        .map(|c| (c.name.clone(), c.policy.clone()))
        .collect();
    let outbox = settings.webhook.as_ref().map(|w| Outbox {
        default_url: w.url.clone(),
    });
    let store = Arc::new(Store::open(&settings.db_path(), policies, outbox)?);
    let chains: Vec<Arc<Chain>> = settings
        .chains
        .iter()
        .cloned()
        .map(|c| Chain::new(c).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let listener = admin::bind(&settings.admin_socket, settings.admin_socket_gid).await?;
    let metrics = settings.metrics_listen.map(telemetry::listen).transpose()?;

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(w) = &settings.webhook {
        tasks.spawn(webhook::run(store.clone(), w.clone(), shutdown.clone()));
    }
    if let Some(server) = metrics {
        let (store, chains) = (store.clone(), chains.clone());
        tasks.spawn(telemetry::run(server, store, chains, shutdown.clone()));
    }
    for chain in chains.iter().filter(|c| c.settings.enabled) {
        let ctx = watcher::Ctx {
            chain: chain.clone(),
            store: store.clone(),
            shutdown: shutdown.clone(),
        };
        let (c, s, stop) = (chain.clone(), store.clone(), shutdown.clone());
        match chain.settings.kind {
            Kind::Bitcoin => {
                let inbox = chain.settings.push_url.clone().map(|url| {
                    let inbox = Arc::new(zmq::Inbox::default());
                    let name = chain.settings.name.clone();
                    tasks.spawn(zmq::run(name, url, inbox.clone(), shutdown.clone()));
                    inbox
                });
                let f = bitcoin::Follower::new(ctx, inbox);
                tasks.spawn(watcher::follow(c, s, stop, f));
            }
            Kind::Ethereum => {
                let ready = chain.settings.push_url.clone().map(|url| {
                    let ready = Arc::new(tokio::sync::Notify::new());
                    let name = chain.settings.name.clone();
                    tasks.spawn(heads::run(name, url, ready.clone(), shutdown.clone()));
                    ready
                });
                let f = evm::Follower::new(ctx, ready);
                tasks.spawn(watcher::follow(c, s, stop, f));
            }
        }
    }
    let api = Arc::new(Api {
        store,
        chains,
        settings: settings.clone(),
        started: Instant::now(),
        threads: api::Threads::start(api::Threads::for_cores(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ))?,
    });
    // The database is open and migrated, and the socket bound: ready, and only then
    // the watchdog.
    service::ready(&api.chains);
    tasks.spawn(service::watchdog(api.chains.clone(), shutdown.clone()));
    tracing::info!(socket = %settings.admin_socket.display(), "settled {} ready", env!("CARGO_PKG_VERSION"));
    admin::run(listener, api, shutdown.clone()).await;
    service::stopping();
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&settings.admin_socket);
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Levels from `RUST_LOG` (default `info`). Under systemd (`JOURNAL_STREAM` set) the
/// journal stamps every line itself, so text lines carry no time and no colours.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match (format, journal) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Text, false) => builder.init(),
    }
}

/// True when stderr is the journal's stream: `JOURNAL_STREAM` names its device and
/// inode, so a child that inherited the variable but writes elsewhere keeps its times.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", stderr.dev(), stderr.ino())
}
