//! Fault points for the crash torture (`scripts/torture`): in debug builds only,
//! `SETTLED_FAULT=<point>:<n>` aborts the process the n-th time `<point>` is reached,
//! as a power cut or a SIGKILL would stop it there. Release builds compile them away.
//!
//! The points sit where a crash would hurt most: inside a block's transaction before
//! its commit (`block_before_commit`), after the commit before the follower takes its
//! effects in (`after_block_commit`), between an event and its outbox row
//! (`event_before_outbox`), after a webhook was delivered and before that is recorded
//! (`webhook_mid_delivery`), and after a create is durable before it is answered
//! (`create_before_answer`).

/// Aborts here if `SETTLED_FAULT` names this point and this is its n-th time.
#[inline]
pub(crate) fn point(name: &str) {
    #[cfg(debug_assertions)]
    armed::reach(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static FAULT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn reach(name: &str) {
        let fault = FAULT.get_or_init(|| {
            let v = std::env::var("SETTLED_FAULT").ok()?;
            let (point, n) = v.split_once(':').unwrap_or((&v, "1"));
            eprintln!("SETTLED_FAULT: armed at {point}, hit {n}");
            Some((point.to_string(), n.parse().unwrap_or(1)))
        });
        if let Some((point, n)) = fault
            && point == name
            && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            eprintln!("SETTLED_FAULT: aborting at {name} (hit {n})");
            std::process::abort();
        }
    }
}
