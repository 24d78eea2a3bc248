//! Deposit addresses from public keys.
//!
//! Bitcoin: a ranged `wpkh`/`tr` descriptor, or an extended public key
//! (`xpub`/`tpub`/`zpub`/`vpub`), which means `wpkh(KEY/0/*)`. Ethereum-like chains:
//! the account-level `xpub` of m/44'/60'/0', whose address `0/i` is the last 20 bytes
//! of the keccak256 of the uncompressed public key at that path.
//!
//! No private key is ever accepted: a key or descriptor holding one is refused.

use std::str::FromStr;

use alloy::primitives::{Address, keccak256};
use bitcoin::base58;
use bitcoin::bip32::{ChildNumber, DerivationPath, Xpub};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Network, NetworkKind};
use miniscript::descriptor::{DescriptorPublicKey, DescriptorType, DescriptorXKey};
use miniscript::{Descriptor, ForEachKey, Translator, translate_hash_clone};

/// A source of fresh deposit addresses on one chain.
#[derive(Debug, Clone)]
pub(crate) struct AddressSource {
    keys: Keys,
    /// [`AddressSource::key_id`], written once.
    id: String,
}

#[derive(Debug, Clone)]
enum Keys {
    /// A descriptor on one Bitcoin network.
    Bitcoin {
        descriptor: Box<Descriptor<DescriptorPublicKey>>,
        network: Network,
    },
    /// The account key m/44'/60'/0' of an Ethereum-like chain, and its external
    /// chain m/44'/60'/0'/0, derived once: each address is then one step from it.
    Evm {
        account: Box<Xpub>,
        external: Box<Xpub>,
    },
}

/// Derives each xpub of a descriptor down to the parent of its wildcard, once: every
/// address is then one derivation step away instead of one per path element (two for
/// the usual `.../0/*`, the better part of the time of an `invoice.create`). Only the
/// scripts matter here, so the keys' origins are left as they were.
struct ToWildcardParent;

impl Translator<DescriptorPublicKey> for ToWildcardParent {
    type TargetPk = DescriptorPublicKey;
    type Error = bitcoin::bip32::Error;

    fn pk(&mut self, pk: &DescriptorPublicKey) -> Result<DescriptorPublicKey, Self::Error> {
        match pk {
            DescriptorPublicKey::XPub(x) if !x.derivation_path.is_empty() => {
                Ok(DescriptorPublicKey::XPub(DescriptorXKey {
                    origin: x.origin.clone(),
                    xkey: x.xkey.derive_pub(secp(), &x.derivation_path)?,
                    derivation_path: DerivationPath::master(),
                    wildcard: x.wildcard,
                }))
            }
            other => Ok(other.clone()),
        }
    }

    translate_hash_clone!(DescriptorPublicKey);
}

/// One derived deposit address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Derived {
    /// As shown: a Bitcoin address, or an EIP-55 checksummed Ethereum address.
    pub(crate) address: String,
    /// What a payment to it carries: the output script on Bitcoin, the 20 address
    /// bytes on Ethereum.
    pub(crate) script: Vec<u8>,
}

// SLIP-132 version bytes of the BIP84 extended public keys, and the BIP32 ones they
// stand for.
const ZPUB: [u8; 4] = [0x04, 0xb2, 0x47, 0x46];
const VPUB: [u8; 4] = [0x04, 0x5f, 0x1c, 0xf6];
const XPUB: [u8; 4] = [0x04, 0x88, 0xb2, 0x1e];
const TPUB: [u8; 4] = [0x04, 0x35, 0x87, 0xcf];

impl AddressSource {
    /// Parses a descriptor or an extended public key for `network`. The error says
    /// what is wrong, without the key itself.
    pub(crate) fn parse(text: &str, network: Network) -> Result<AddressSource, String> {
        let text = text.trim();
        let descriptor_text = if text.contains('(') {
            text.to_string()
        } else {
            format!("wpkh({}/0/*)", to_bip32_pub(text)?)
        };
        let descriptor = Descriptor::<DescriptorPublicKey>::from_str(&descriptor_text)
            .map_err(|e| describe_parse_error(&e.to_string(), &descriptor_text))?;
        match descriptor.desc_type() {
            DescriptorType::Wpkh | DescriptorType::Tr => {}
            other => {
                return Err(format!(
                    "only wpkh(...) and tr(...) descriptors are accepted, not {other:?}"
                ));
            }
        }
        if !descriptor.has_wildcard() {
            return Err("the descriptor must be ranged (end its key with /*)".into());
        }
        if descriptor.is_multipath() {
            return Err(
                "multipath descriptors (<0;1>) are not accepted: give the receive path".into(),
            );
        }
        let want = NetworkKind::from(network);
        let mut wrong = None;
        descriptor.for_each_key(|k| {
            let kind = match k {
                DescriptorPublicKey::XPub(x) => Some(x.xkey.network),
                DescriptorPublicKey::MultiXPub(x) => Some(x.xkey.network),
                DescriptorPublicKey::Single(_) => None,
            };
            if let Some(kind) = kind
                && kind != want
            {
                wrong = Some(kind);
            }
            true
        });
        if let Some(kind) = wrong {
            let is = if kind == NetworkKind::Main {
                "mainnet"
            } else {
                "test network"
            };
            return Err(format!("the key is for {is}, but the chain is {network}"));
        }
        // The key id stays the descriptor as configured: the database knows it by that.
        let id = descriptor.to_string();
        let descriptor = descriptor
            .translate_pk(&mut ToWildcardParent)
            .map_err(|e| format!("cannot derive the descriptor's keys: {e:?}"))?;
        let keys = Keys::Bitcoin {
            descriptor: Box::new(descriptor),
            network,
        };
        let source = AddressSource { keys, id };
        source.derive(0)?;
        Ok(source)
    }

    /// Parses the account-level extended public key (m/44'/60'/0') of an
    /// Ethereum-like chain.
    pub(crate) fn parse_evm(text: &str) -> Result<AddressSource, String> {
        let text = text.trim();
        let data = base58::decode_check(text)
            .map_err(|_| "is not an extended public key (xpub...)".to_string())?;
        if data.len() != 78 {
            return Err("is not an extended public key (wrong length)".into());
        }
        let version: [u8; 4] = data[..4].try_into().expect("length checked");
        if is_private_version(version) {
            return Err("is a private key: settled only takes public keys".into());
        }
        if version != XPUB && version != TPUB {
            return Err(
                "is not a BIP32 xpub (ypub/zpub-style keys are for Bitcoin script types)".into(),
            );
        }
        let xpub = Xpub::decode(&data).map_err(|e| format!("is not a valid xpub: {e}"))?;
        // Wallets derive m/44'/60'/0'/0/i; a key at another depth gives other addresses.
        if xpub.depth != 3 {
            return Err(format!(
                "must be the account key m/44'/60'/0' (depth 3), but this key has depth {}",
                xpub.depth
            ));
        }
        let external = xpub
            .derive_pub(secp(), &[ChildNumber::Normal { index: 0 }])
            .map_err(|e| format!("cannot derive its external chain: {e}"))?;
        let source = AddressSource::new(Keys::Evm {
            account: Box::new(xpub),
            external: Box::new(external),
        });
        source.derive(0)?;
        Ok(source)
    }

    /// A stable name of the key, so that a new key starts its own index at 0 and an
    /// old one never reuses an index.
    pub(crate) fn key_id(&self) -> &str {
        &self.id
    }

    fn new(keys: Keys) -> AddressSource {
        let id = match &keys {
            Keys::Bitcoin { descriptor, .. } => descriptor.to_string(),
            Keys::Evm { account, .. } => account.to_string(),
        };
        AddressSource { keys, id }
    }

    /// The address at `index`.
    pub(crate) fn derive(&self, index: u32) -> Result<Derived, String> {
        let cannot = |e: &dyn std::fmt::Display| format!("cannot derive index {index}: {e}");
        match &self.keys {
            Keys::Bitcoin {
                descriptor,
                network,
            } => {
                let definite = descriptor
                    .at_derivation_index(index)
                    .map_err(|e| cannot(&e))?;
                // The key is derived once, for the script; the address is read from it.
                let script = definite.script_pubkey();
                let address =
                    bitcoin::Address::from_script(&script, *network).map_err(|e| cannot(&e))?;
                Ok(Derived {
                    address: address.to_string(),
                    script: script.into_bytes(),
                })
            }
            Keys::Evm { external, .. } => {
                let child = ChildNumber::from_normal_idx(index).map_err(|e| cannot(&e))?;
                let key = external
                    .derive_pub(secp(), &[child])
                    .map_err(|e| cannot(&e))?;
                let address = evm_address(&key.public_key.serialize_uncompressed());
                Ok(Derived {
                    address: address.to_checksum(None),
                    script: address.to_vec(),
                })
            }
        }
    }
}

/// One verification context for every derivation: making one is not free.
fn secp() -> &'static Secp256k1<bitcoin::secp256k1::VerifyOnly> {
    static SECP: std::sync::LazyLock<Secp256k1<bitcoin::secp256k1::VerifyOnly>> =
        std::sync::LazyLock::new(Secp256k1::verification_only);
    &SECP
}

/// The Ethereum address of an uncompressed secp256k1 public key (0x04 || x || y).
fn evm_address(uncompressed: &[u8; 65]) -> Address {
    Address::from_slice(&keccak256(&uncompressed[1..])[12..])
}

/// Turns a zpub/vpub into the xpub/tpub it encodes; xpub/tpub pass through.
fn to_bip32_pub(text: &str) -> Result<String, String> {
    let mut data = base58::decode_check(text)
        .map_err(|_| "is neither a descriptor nor an extended public key".to_string())?;
    if data.len() != 78 {
        return Err("is not an extended public key (wrong length)".into());
    }
    let version: [u8; 4] = data[..4].try_into().expect("length checked");
    let bip32 = match version {
        XPUB | TPUB => return Ok(text.to_string()),
        ZPUB => XPUB,
        VPUB => TPUB,
        _ if is_private_version(version) => {
            return Err("is a private key: settled only takes public keys".into());
        }
        _ => {
            return Err(
                "is an extended key of a kind settled does not take (use xpub, tpub, zpub, vpub or a descriptor)"
                    .into(),
            );
        }
    };
    data[..4].copy_from_slice(&bip32);
    Ok(base58::encode_check(&data))
}

fn is_private_version(v: [u8; 4]) -> bool {
    // xprv, tprv, yprv, zprv, uprv, vprv
    matches!(
        v,
        [0x04, 0x88, 0xad, 0xe4]
            | [0x04, 0x35, 0x83, 0x94]
            | [0x04, 0x9d, 0x78, 0x78]
            | [0x04, 0xb2, 0x43, 0x0c]
            | [0x04, 0x4a, 0x4e, 0x28]
            | [0x04, 0x5f, 0x18, 0xbc]
    )
}

fn describe_parse_error(err: &str, text: &str) -> String {
    if text.contains("prv") {
        return "holds a private key: settled only takes public keys".into();
    }
    format!("is not a valid descriptor: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // BIP84's published vectors, for "abandon abandon ... about" at m/84'/0'/0'.
    const BIP84_ZPUB: &str = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs";
    // BIP86's, for the same mnemonic at m/86'/0'/0'.
    const BIP86_XPUB: &str = "xpub6BgBgsespWvERF3LHQu6CnqdvfEvtMcQjYrcRzx53QJjSxarj2afYWcLteoGVky7D3UKDP9QyrLprQ3VCECoY49yfdDEHGCtMMj92pReUsQ";

    #[test]
    fn bip84_vectors_from_zpub() {
        let s = AddressSource::parse(BIP84_ZPUB, Network::Bitcoin).unwrap();
        assert_eq!(
            s.derive(0).unwrap().address,
            "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
        );
        assert_eq!(
            s.derive(1).unwrap().address,
            "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
        );
    }

    #[test]
    fn bip84_vectors_from_the_matching_descriptor() {
        let xpub = to_bip32_pub(BIP84_ZPUB).unwrap();
        let d = format!("wpkh([73c5da0a/84h/0h/0h]{xpub}/0/*)");
        let s = AddressSource::parse(&d, Network::Bitcoin).unwrap();
        assert_eq!(
            s.derive(0).unwrap().address,
            "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
        );
        // The change branch, BIP84's third vector.
        let d = format!("wpkh({xpub}/1/*)");
        let s = AddressSource::parse(&d, Network::Bitcoin).unwrap();
        assert_eq!(
            s.derive(0).unwrap().address,
            "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"
        );
    }

    #[test]
    fn bip86_taproot_vector() {
        let d = format!("tr({BIP86_XPUB}/0/*)");
        let s = AddressSource::parse(&d, Network::Bitcoin).unwrap();
        assert_eq!(
            s.derive(0).unwrap().address,
            "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
        );
    }

    #[test]
    fn checksum_is_optional_but_checked() {
        let xpub = to_bip32_pub(BIP84_ZPUB).unwrap();
        let plain = format!("wpkh({xpub}/0/*)");
        let with = AddressSource::parse(&plain, Network::Bitcoin)
            .unwrap()
            .key_id()
            .to_string();
        assert!(with.contains('#'));
        assert!(AddressSource::parse(&with, Network::Bitcoin).is_ok());
        let (body, sum) = with.split_once('#').unwrap();
        let bad = format!("{body}#{}", sum.chars().rev().collect::<String>());
        assert!(AddressSource::parse(&bad, Network::Bitcoin).is_err());
    }

    #[test]
    fn wrong_network_is_refused() {
        let e = AddressSource::parse(BIP84_ZPUB, Network::Regtest).unwrap_err();
        assert!(e.contains("mainnet"), "{e}");
    }

    #[test]
    fn unranged_and_other_types_are_refused() {
        let xpub = to_bip32_pub(BIP84_ZPUB).unwrap();
        assert!(
            AddressSource::parse(&format!("wpkh({xpub}/0/0)"), Network::Bitcoin)
                .unwrap_err()
                .contains("ranged")
        );
        assert!(
            AddressSource::parse(&format!("pkh({xpub}/0/*)"), Network::Bitcoin)
                .unwrap_err()
                .contains("only wpkh")
        );
        assert!(AddressSource::parse("nonsense", Network::Bitcoin).is_err());
    }

    /// m/44'/60'/0' of "abandon" x11 + "about", from its BIP39 seed.
    fn ethereum_account_xpub() -> String {
        let seed = hex_seed(
            "5eb00bbddcf069084889a8ab9155568165f5c453ccb85e70811aaed6f6da5fc19a5ac40b389cd370d086206dec8aa6c43daea6690f20ad3d8d48b2d2ce9e38e4",
        );
        let secp = Secp256k1::new();
        let master = bitcoin::bip32::Xpriv::new_master(NetworkKind::Main, &seed).unwrap();
        let path: bitcoin::bip32::DerivationPath = "m/44'/60'/0'".parse().unwrap();
        let account = master.derive_priv(&secp, &path).unwrap();
        Xpub::from_priv(&secp, &account).to_string()
    }

    fn hex_seed(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn ethereum_vector_is_eip55_checksummed() {
        let xpub = ethereum_account_xpub();
        assert_eq!(xpub, ETH_ACCOUNT_XPUB);
        let s = AddressSource::parse_evm(&xpub).unwrap();
        let d = s.derive(0).unwrap();
        assert_eq!(d.address, "0x9858EfFD232B4033E47d90003D41EC34EcaEda94");
        assert_eq!(d.script.len(), 20);
        assert_ne!(s.derive(1).unwrap().address, d.address);
    }

    // The same key, as an operator would configure it (also used by the tests on anvil).
    const ETH_ACCOUNT_XPUB: &str = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt";

    #[test]
    fn ethereum_keys_must_be_account_level_public_xpubs() {
        let secp = Secp256k1::new();
        let master = bitcoin::bip32::Xpriv::new_master(NetworkKind::Main, &[7u8; 32]).unwrap();
        assert!(
            AddressSource::parse_evm(&master.to_string())
                .unwrap_err()
                .contains("private")
        );
        let e = AddressSource::parse_evm(&Xpub::from_priv(&secp, &master).to_string()).unwrap_err();
        assert!(e.contains("depth 0"), "{e}");
        assert!(
            AddressSource::parse_evm(BIP84_ZPUB)
                .unwrap_err()
                .contains("xpub")
        );
        assert!(AddressSource::parse_evm("0x1234").is_err());
    }

    #[test]
    fn private_keys_are_refused() {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let xprv = bitcoin::bip32::Xpriv::new_master(NetworkKind::Main, &[7u8; 32]).unwrap();
        let e = AddressSource::parse(&xprv.to_string(), Network::Bitcoin).unwrap_err();
        assert!(e.contains("private"), "{e}");
        let e = AddressSource::parse(&format!("wpkh({xprv}/0/*)"), Network::Bitcoin).unwrap_err();
        assert!(e.contains("private"), "{e}");
        let xpub = bitcoin::bip32::Xpub::from_priv(&secp, &xprv);
        assert!(AddressSource::parse(&xpub.to_string(), Network::Bitcoin).is_ok());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Valid keys and descriptors of every shape settled takes.
        fn valid() -> Vec<String> {
            let xpub = to_bip32_pub(BIP84_ZPUB).unwrap();
            vec![
                BIP84_ZPUB.to_string(),
                BIP86_XPUB.to_string(),
                format!("wpkh([73c5da0a/84h/0h/0h]{xpub}/0/*)"),
                format!("tr({BIP86_XPUB}/0/*)"),
                format!("wpkh({xpub}/<0;1>/*)"),
                format!("sh(wpkh({xpub}/0/*))"),
            ]
        }

        /// One edit of a valid text: a character replaced, inserted or removed, or
        /// the text cut short.
        fn mutated() -> impl Strategy<Value = String> {
            (0..valid().len(), 0usize..200, any::<char>(), 0..4u8).prop_map(|(k, at, c, how)| {
                let mut chars: Vec<char> = valid()[k].chars().collect();
                let at = at % (chars.len() + 1);
                match how {
                    0 if at < chars.len() => chars[at] = c,
                    1 => chars.insert(at, c),
                    2 if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ => chars.truncate(at),
                }
                chars.into_iter().collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1_000))]

            // A bad key is an error that names what is wrong, never a panic, and never
            // an error that quotes the key back (it goes to logs).
            #[test]
            fn a_mutated_key_or_descriptor_is_refused_or_derives(text in mutated()) {
                for network in [Network::Bitcoin, Network::Testnet, Network::Regtest] {
                    match AddressSource::parse(&text, network) {
                        Ok(s) => {
                            prop_assert!(s.derive(7).is_ok());
                        }
                        Err(e) => prop_assert!(!e.is_empty()),
                    }
                }
                if let Ok(s) = AddressSource::parse_evm(&text) {
                    prop_assert!(s.derive(7).is_ok());
                }
            }

            #[test]
            fn any_text_is_refused_without_a_panic(text in "\\PC{0,120}") {
                prop_assert!(AddressSource::parse(&text, Network::Bitcoin).is_err() || text.contains("pub"));
                let _ = AddressSource::parse_evm(&text);
            }
        }
    }
}
