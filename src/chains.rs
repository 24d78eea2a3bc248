//! What a network is: the data in `chains/<name>.toml`, and the policy derived from it.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::primitives::Address;
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
    pub(crate) final_confirmations: Option<FinalityFile>,
    pub(crate) confirmation_window: Option<u64>,
    pub(crate) late_payment_window: Option<u64>,
    pub(crate) accept_late_payments: Option<bool>,
    pub(crate) max_reorg_depth: Option<u32>,
    pub(crate) confirmations: Option<Vec<TierFile>>,
}

/// `final_confirmations` as written: a number of confirmations, or `"finalized"` (the
/// node's `finalized` block, on Ethereum-like chains).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum FinalityFile {
    Confirmations(u32),
    Tag(String),
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
    pub(crate) final_confirmations: Option<FinalityFile>,
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

    /// The tokens of this file named in `enabled` (the config's `tokens`), checked.
    pub(crate) fn tokens(&self, what: &str, enabled: &[String]) -> anyhow::Result<Vec<Token>> {
        let mut out = Vec::new();
        for (i, symbol) in enabled.iter().enumerate() {
            let Some(t) = self.tokens.iter().find(|t| &t.symbol == symbol) else {
                anyhow::bail!("{what}.tokens[{i}]: {symbol:?} is not a token of the chain file");
            };
            if out.iter().any(|o: &Token| &o.asset.symbol == symbol) {
                anyhow::bail!("{what}.tokens[{i}]: {symbol:?} is listed twice");
            }
            let at = format!("{what} token {symbol}");
            if t.symbol == self.native.symbol {
                anyhow::bail!("{at}: the symbol is the native coin's");
            }
            let contract = parse_address(&t.contract)
                .map_err(|e| anyhow::anyhow!("{at}.contract: {:?} {e}", t.contract))?;
            let tiers = match &t.confirmations {
                Some(c) => parse_tiers(&at, c, t.decimals)?,
                None => Vec::new(),
            };
            out.push(Token {
                asset: Asset {
                    symbol: t.symbol.clone(),
                    decimals: t.decimals,
                },
                contract,
                tiers,
            });
        }
        Ok(out)
    }

    /// The policy keys of this file, as an override layer.
    pub(crate) fn policy(&self) -> PolicyFile {
        PolicyFile {
            final_confirmations: self.final_confirmations.clone(),
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

/// When a payment is final: no longer rolled back by a reorganisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finality {
    /// With this many confirmations.
    Confirmations(u32),
    /// At or below the node's `finalized` block (Ethereum-like chains).
    Finalized,
}

impl std::fmt::Display for Finality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finality::Confirmations(n) => write!(f, "{n}"),
            Finality::Finalized => f.write_str("\"finalized\""),
        }
    }
}

/// A token an Ethereum-like chain accepts, with its own confirmation tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) asset: Asset,
    pub(crate) contract: Address,
    pub(crate) tiers: Vec<Tier>,
}

/// The effective settlement policy of one chain, after the config's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) finality: Finality,
    pub(crate) confirmation_window: u64,
    pub(crate) late_payment_window: u64,
    pub(crate) accept_late_payments: bool,
    pub(crate) max_reorg_depth: u32,
    /// Tiers of the native coin, in its base units.
    pub(crate) tiers: Vec<Tier>,
    /// Tiers of each accepted token, by symbol, in the token's base units.
    pub(crate) token_tiers: BTreeMap<String, Vec<Tier>>,
    /// The decimals of every asset the chain reads, by symbol: how an amount in it is
    /// written, whether or not the invoice it paid takes it.
    pub(crate) decimals: BTreeMap<String, u8>,
}

impl Policy {
    /// Merges the chain file's policy with the config's overrides; `what` names the
    /// place for errors (`chains.bitcoin`).
    pub(crate) fn resolve(
        what: &str,
        file: &PolicyFile,
        over: &PolicyFile,
        native: &Asset,
        tokens: &[Token],
    ) -> anyhow::Result<Policy> {
        let tiers_file = over.confirmations.as_ref().or(file.confirmations.as_ref());
        // The chain's list serves a token without its own, read in the token's units.
        let tiers_in = |decimals| match tiers_file {
            Some(t) => parse_tiers(what, t, decimals),
            None => Ok(vec![Tier {
                up_to: None,
                required: 1,
            }]),
        };
        let tiers = tiers_in(native.decimals)?;
        let mut token_tiers = BTreeMap::new();
        for t in tokens {
            let own = if t.tiers.is_empty() {
                tiers_in(t.asset.decimals)?
            } else {
                t.tiers.clone()
            };
            token_tiers.insert(t.asset.symbol.clone(), own);
        }
        let finality = match over
            .final_confirmations
            .as_ref()
            .or(file.final_confirmations.as_ref())
        {
            None => Finality::Confirmations(6),
            Some(FinalityFile::Confirmations(0)) => {
                anyhow::bail!("{what}.final_confirmations: must be at least 1")
            }
            Some(FinalityFile::Confirmations(n)) => Finality::Confirmations(*n),
            Some(FinalityFile::Tag(t)) if t == "finalized" => Finality::Finalized,
            Some(FinalityFile::Tag(t)) => anyhow::bail!(
                "{what}.final_confirmations: {t:?} is neither a number of confirmations nor \"finalized\""
            ),
        };
        let decimals = std::iter::once(native)
            .chain(tokens.iter().map(|t| &t.asset))
            .map(|a| (a.symbol.clone(), a.decimals))
            .collect();
        let policy = Policy {
            decimals,
            finality,
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
            token_tiers,
        };
        if let Finality::Confirmations(n) = policy.finality
            && policy.max_reorg_depth < n
        {
            anyhow::bail!(
                "{what}.max_reorg_depth: {} is less than final_confirmations ({n})",
                policy.max_reorg_depth,
            );
        }
        Ok(policy)
    }

    /// The highest final block, given the scanned tip and the node's `finalized` block
    /// (`lifecycle.md`, "Going backwards"); `None` while no block is final.
    pub(crate) fn final_height(&self, tip: Option<u64>, finalized: Option<u64>) -> Option<u64> {
        let tip = tip?;
        match self.finality {
            Finality::Confirmations(n) => (tip + 1).checked_sub(u64::from(n)),
            // A finalized block settled has not scanned yet cannot make its payments final.
            Finality::Finalized => finalized.map(|f| f.min(tip)),
        }
    }

    /// Required confirmations for an invoice of `asset` and `amount_due` (the most
    /// demanding tier when the amount is not known yet, as in `open` mode before the
    /// first payment).
    pub(crate) fn required_for(&self, asset: &str, amount_due: Option<U256>) -> u32 {
        let tiers = self.token_tiers.get(asset).unwrap_or(&self.tiers);
        let Some(due) = amount_due else {
            return tiers.iter().map(|t| t.required).max().unwrap_or(1);
        };
        tiers
            .iter()
            .find(|t| t.up_to.is_none_or(|up| due <= up))
            .or(tiers.last())
            .map_or(1, |t| t.required)
    }
}

/// Parses an Ethereum address in any case; a mixed-case one must carry a valid
/// EIP-55 checksum, since mixed case is how a typo is caught.
pub(crate) fn parse_address(text: &str) -> Result<Address, String> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("is not an address (0x and 40 hex digits)".into());
    }
    let address: Address = format!("0x{hex}")
        .parse()
        .map_err(|_| "is not an address".to_string())?;
    let mixed =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed && address.to_checksum(None)[2..] != *hex {
        return Err("has a wrong EIP-55 checksum (mixed case that does not match)".into());
    }
    Ok(address)
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
        let p = Policy::resolve("chains.x", &file, &PolicyFile::default(), &btc(), &[]).unwrap();
        let at = |s: &str| p.required_for("BTC", Some(amount::parse(s, 8).unwrap()));
        assert_eq!(at("0.0005"), 0);
        assert_eq!(at("0.001"), 0);
        assert_eq!(at("0.00100001"), 1);
        assert_eq!(at("0.1"), 1);
        assert_eq!(at("5"), 3);
        assert_eq!(p.required_for("BTC", None), 3);
    }

    #[test]
    fn config_overrides_the_chain_file() {
        let file = PolicyFile {
            confirmations: Some(tiers()),
            final_confirmations: Some(FinalityFile::Confirmations(6)),
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
        let p = Policy::resolve("chains.x", &file, &over, &btc(), &[]).unwrap();
        assert_eq!(p.required_for("BTC", Some(U256::from(1u8))), 2);
        assert!(p.accept_late_payments);
        assert_eq!(p.finality, Finality::Confirmations(6));
    }

    #[test]
    fn tokens_take_their_own_tiers_or_the_chains_in_their_units() {
        let file = PolicyFile {
            confirmations: Some(tiers()),
            final_confirmations: Some(FinalityFile::Tag("finalized".into())),
            ..Default::default()
        };
        let usdt = Token {
            asset: Asset {
                symbol: "USDT".into(),
                decimals: 6,
            },
            contract: Address::ZERO,
            tiers: parse_tiers(
                "t",
                &[
                    TierFile {
                        up_to: Some("100".into()),
                        required: 2,
                    },
                    TierFile {
                        up_to: None,
                        required: 9,
                    },
                ],
                6,
            )
            .unwrap(),
        };
        let plain = Token {
            asset: Asset {
                symbol: "DAI".into(),
                decimals: 18,
            },
            contract: Address::ZERO,
            tiers: Vec::new(),
        };
        let p = Policy::resolve(
            "chains.x",
            &file,
            &PolicyFile::default(),
            &btc(),
            &[usdt, plain],
        )
        .unwrap();
        assert_eq!(p.finality, Finality::Finalized);
        assert_eq!(
            p.required_for("USDT", Some(amount::parse("100", 6).unwrap())),
            2
        );
        assert_eq!(
            p.required_for("USDT", Some(amount::parse("100.000001", 6).unwrap())),
            9
        );
        // The chain's 0.001 read as 0.001 DAI.
        assert_eq!(
            p.required_for("DAI", Some(amount::parse("0.001", 18).unwrap())),
            0
        );
        assert_eq!(
            p.required_for("DAI", Some(amount::parse("0.0011", 18).unwrap())),
            1
        );
        assert_eq!(p.final_height(Some(100), Some(90)), Some(90));
        assert_eq!(p.final_height(Some(80), Some(90)), Some(80));
        assert_eq!(p.final_height(Some(80), None), None);
        let bad = PolicyFile {
            final_confirmations: Some(FinalityFile::Tag("safe".into())),
            ..Default::default()
        };
        let e = Policy::resolve("chains.x", &bad, &PolicyFile::default(), &btc(), &[]).unwrap_err();
        assert!(
            e.to_string().contains("chains.x.final_confirmations"),
            "{e}"
        );
    }

    #[test]
    fn final_height_by_confirmations() {
        let p = Policy::resolve(
            "chains.x",
            &PolicyFile::default(),
            &PolicyFile::default(),
            &btc(),
            &[],
        )
        .unwrap();
        assert_eq!(p.final_height(Some(10), None), Some(5));
        assert_eq!(p.final_height(Some(4), Some(4)), None);
        assert_eq!(p.final_height(None, None), None);
    }

    #[test]
    fn addresses_in_any_case_but_mixed_case_must_be_checksummed() {
        let good = "0xdAC17F958D2ee523a2206206994597C13D831ec7";
        let a = parse_address(good).unwrap();
        assert_eq!(parse_address(&good.to_lowercase()).unwrap(), a);
        assert_eq!(
            parse_address(&format!("0x{}", good[2..].to_uppercase())).unwrap(),
            a
        );
        assert!(
            parse_address("0xdAC17F958D2ee523a2206206994597C13D831eC7")
                .unwrap_err()
                .contains("checksum")
        );
        assert!(parse_address("0x1234").is_err());
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
