//! What a network is: the data in `chains/<name>.toml`, and the policy derived from it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::amount::{self, U256};

/// Which follower a chain needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Bitcoin,
    Ethereum,
}

/// An asset as the chain file defines it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssetFile {
    pub(crate) symbol: String,
    pub(crate) decimals: u8,
}

/// A token of an Ethereum-like chain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenFile {
    pub(crate) symbol: String,
    pub(crate) contract: String,
    pub(crate) decimals: u8,
    #[serde(default)]
    pub(crate) confirmations: Option<Vec<TierFile>>,
}

/// One `[[confirmations]]` tier as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TierFile {
    #[serde(default)]
    pub(crate) up_to: Option<String>,
    pub(crate) required: u32,
}

/// The policy keys, shared by the chain file and the `[chains.<name>]` overrides.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    pub(crate) final_confirmations: Option<u32>,
    pub(crate) confirmation_window: Option<u64>,
    pub(crate) late_payment_window: Option<u64>,
    pub(crate) accept_late_payments: Option<bool>,
    pub(crate) max_reorg_depth: Option<u32>,
    pub(crate) confirmations: Option<Vec<TierFile>>,
}

/// A `chains/<name>.toml` file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChainFile {
    pub(crate) kind: Kind,
    #[serde(default)]
    pub(crate) network: Option<String>,
    #[serde(default)]
    pub(crate) chain_id: Option<u64>,
    pub(crate) native: AssetFile,
    #[serde(default)]
    pub(crate) final_confirmations: Option<u32>,
    #[serde(default)]
    pub(crate) confirmation_window: Option<u64>,
    #[serde(default)]
    pub(crate) late_payment_window: Option<u64>,
    #[serde(default)]
    pub(crate) accept_late_payments: Option<bool>,
    #[serde(default)]
    pub(crate) max_reorg_depth: Option<u32>,
    #[serde(default)]
    pub(crate) confirmations: Option<Vec<TierFile>>,
    #[serde(default)]
    pub(crate) tokens: Vec<TokenFile>,
    #[serde(default)]
    pub(crate) trace_internal_transfers: Option<bool>,
}

impl ChainFile {
    /// Reads `<dir>/<name>.toml`.
    pub(crate) fn load(dir: &Path, name: &str) -> anyhow::Result<ChainFile> {
        let path = dir.join(format!("{name}.toml"));
        if !path.is_file() {
            anyhow::bail!(
                "chains.{name}: no chain file {} (daemon.chains_dir is {})",
                path.display(),
                dir.display()
            );
        }
        config::Config::builder()
            .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The policy keys of this file, as an override layer.
    pub(crate) fn policy(&self) -> PolicyFile {
        PolicyFile {
            final_confirmations: self.final_confirmations,
            confirmation_window: self.confirmation_window,
            late_payment_window: self.late_payment_window,
            accept_late_payments: self.accept_late_payments,
            max_reorg_depth: self.max_reorg_depth,
            confirmations: self.confirmations.clone(),
        }
    }
}

/// An asset that can be paid, with the decimals its amounts have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asset {
    pub(crate) symbol: String,
    pub(crate) decimals: u8,
}

/// A confirmation tier in base units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tier {
    /// `None` is "the rest".
    pub(crate) up_to: Option<U256>,
    pub(crate) required: u32,
}

/// The effective settlement policy of one chain, after the config's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) final_confirmations: u32,
    pub(crate) confirmation_window: u64,
    pub(crate) late_payment_window: u64,
    pub(crate) accept_late_payments: bool,
    pub(crate) max_reorg_depth: u32,
    pub(crate) tiers: Vec<Tier>,
}

impl Policy {
    /// Merges the chain file's policy with the config's overrides; `what` names the
    /// place for errors (`chains.bitcoin`).
    pub(crate) fn resolve(
        what: &str,
        file: &PolicyFile,
        over: &PolicyFile,
        native: &Asset,
    ) -> anyhow::Result<Policy> {
        let tiers_file = over.confirmations.as_ref().or(file.confirmations.as_ref());
        let tiers = match tiers_file {
            Some(t) => parse_tiers(what, t, native.decimals)?,
            None => vec![Tier {
                up_to: None,
                required: 1,
            }],
        };
        let policy = Policy {
            final_confirmations: over
                .final_confirmations
                .or(file.final_confirmations)
                .unwrap_or(6),
            confirmation_window: over
                .confirmation_window
                .or(file.confirmation_window)
                .unwrap_or(86_400),
            late_payment_window: over
                .late_payment_window
                .or(file.late_payment_window)
                .unwrap_or(604_800),
            accept_late_payments: over
                .accept_late_payments
                .or(file.accept_late_payments)
                .unwrap_or(false),
            max_reorg_depth: over.max_reorg_depth.or(file.max_reorg_depth).unwrap_or(100),
            tiers,
        };
        if policy.final_confirmations == 0 {
            anyhow::bail!("{what}.final_confirmations: must be at least 1");
        }
        if policy.max_reorg_depth < policy.final_confirmations {
            anyhow::bail!(
                "{what}.max_reorg_depth: {} is less than final_confirmations ({})",
                policy.max_reorg_depth,
                policy.final_confirmations
            );
        }
        Ok(policy)
    }

    /// Required confirmations for an invoice of `amount_due` (the most demanding tier
    /// when the amount is not known yet, as in `open` mode before the first payment).
    pub(crate) fn required_for(&self, amount_due: Option<U256>) -> u32 {
        let Some(due) = amount_due else {
            return self.tiers.iter().map(|t| t.required).max().unwrap_or(1);
        };
        self.tiers
            .iter()
            .find(|t| t.up_to.is_none_or(|up| due <= up))
            .or(self.tiers.last())
            .map_or(1, |t| t.required)
    }
}

/// Parses `[[confirmations]]`: ascending `up_to`, only the last may leave it out.
pub(crate) fn parse_tiers(
    what: &str,
    tiers: &[TierFile],
    decimals: u8,
) -> anyhow::Result<Vec<Tier>> {
    if tiers.is_empty() {
        anyhow::bail!("{what}.confirmations: needs at least one tier");
    }
    let mut out: Vec<Tier> = Vec::with_capacity(tiers.len());
    for (i, t) in tiers.iter().enumerate() {
        let up_to = match &t.up_to {
            Some(s) => Some(
                amount::parse(s, decimals)
                    .map_err(|e| anyhow::anyhow!("{what}.confirmations[{i}].up_to: {s:?} {e}"))?,
            ),
            None if i + 1 == tiers.len() => None,
            None => anyhow::bail!(
                "{what}.confirmations[{i}].up_to: only the last tier may leave out up_to"
            ),
        };
        if let (Some(prev), Some(cur)) = (out.last().and_then(|p| p.up_to), up_to)
            && cur <= prev
        {
            anyhow::bail!("{what}.confirmations[{i}].up_to: tiers must be in ascending up_to");
        }
        out.push(Tier {
            up_to,
            required: t.required,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<TierFile> {
        vec![
            TierFile {
                up_to: Some("0.001".into()),
                required: 0,
            },
            TierFile {
                up_to: Some("0.1".into()),
                required: 1,
            },
            TierFile {
                up_to: None,
                required: 3,
            },
        ]
    }

    fn btc() -> Asset {
        Asset {
            symbol: "BTC".into(),
            decimals: 8,
        }
    }

    #[test]
    fn first_fitting_tier_applies() {
        let file = PolicyFile {
            confirmations: Some(tiers()),
            ..Default::default()
        };
        let p = Policy::resolve("chains.x", &file, &PolicyFile::default(), &btc()).unwrap();
        let at = |s: &str| p.required_for(Some(amount::parse(s, 8).unwrap()));
        assert_eq!(at("0.0005"), 0);
        assert_eq!(at("0.001"), 0);
        assert_eq!(at("0.00100001"), 1);
        assert_eq!(at("0.1"), 1);
        assert_eq!(at("5"), 3);
        assert_eq!(p.required_for(None), 3);
    }

    #[test]
    fn config_overrides_the_chain_file() {
        let file = PolicyFile {
            confirmations: Some(tiers()),
            final_confirmations: Some(6),
            ..Default::default()
        };
        let over = PolicyFile {
            confirmations: Some(vec![TierFile {
                up_to: None,
                required: 2,
            }]),
            accept_late_payments: Some(true),
            ..Default::default()
        };
        let p = Policy::resolve("chains.x", &file, &over, &btc()).unwrap();
        assert_eq!(p.required_for(Some(U256::from(1u8))), 2);
        assert!(p.accept_late_payments);
        assert_eq!(p.final_confirmations, 6);
    }

    #[test]
    fn bad_tiers_name_the_key() {
        let mut t = tiers();
        t[1].up_to = Some("0.0001".into());
        let e = parse_tiers("chains.x", &t, 8).unwrap_err().to_string();
        assert!(e.contains("chains.x.confirmations[1].up_to"), "{e}");
        let mut t = tiers();
        t[0].up_to = None;
        let e = parse_tiers("chains.x", &t, 8).unwrap_err().to_string();
        assert!(e.contains("confirmations[0].up_to"), "{e}");
        let mut t = tiers();
        t[0].up_to = Some("0.000000001".into());
        let e = parse_tiers("chains.x", &t, 8).unwrap_err().to_string();
        assert!(e.contains("more than the 8"), "{e}");
    }
}
