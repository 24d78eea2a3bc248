//! Exact amounts: integer base units (satoshi, wei) inside, decimal strings at the edges.
//!
//! Parsing is done on the string itself so that no value ever passes through a float or
//! a fixed-precision decimal that could round it.

pub(crate) use alloy::primitives::U256;

/// Why a decimal string is not an amount of an asset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AmountError {
    #[error("must be a decimal string such as \"0.0015\"")]
    Syntax,
    #[error("has {got} decimals, more than the {max} the asset has")]
    TooManyDecimals { got: usize, max: u8 },
    #[error("is too large")]
    TooLarge,
}

/// Parses a non-negative decimal string into base units of an asset with `decimals`.
pub(crate) fn parse(text: &str, decimals: u8) -> Result<U256, AmountError> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(AmountError::Syntax);
    }
    let frac = frac.unwrap_or("");
    if frac.len() > usize::from(decimals) {
        return Err(AmountError::TooManyDecimals {
            got: frac.len(),
            max: decimals,
        });
    }
    let padded = format!(
        "{int}{frac}{}",
        "0".repeat(usize::from(decimals) - frac.len())
    );
    U256::from_str_radix(&padded, 10).map_err(|_| AmountError::TooLarge)
}

/// Formats base units as the shortest exact decimal string: `150000` sat is `"0.0015"`.
pub(crate) fn format(units: U256, decimals: u8) -> String {
    let digits = units.to_string();
    let decimals = usize::from(decimals);
    if decimals == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = decimals + 1);
    let (int, frac) = padded.split_at(padded.len() - decimals);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

/// Sums amounts; a sum past U256 cannot come from real payments, so it saturates.
pub(crate) fn sum<I: IntoIterator<Item = U256>>(items: I) -> U256 {
    items
        .into_iter()
        .fold(U256::ZERO, |acc, x| acc.saturating_add(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse("0.0015", 8), Ok(U256::from(150_000u64)));
        assert_eq!(parse("1", 8), Ok(U256::from(100_000_000u64)));
        assert_eq!(parse("0.00000001", 8), Ok(U256::from(1u64)));
        assert_eq!(
            parse("12.5", 18),
            Ok(U256::from(12_500_000_000_000_000_000u128))
        );
        assert_eq!(parse("0", 8), Ok(U256::ZERO));
    }

    #[test]
    fn refuses_more_decimals_than_the_asset_has() {
        assert_eq!(
            parse("0.000000001", 8),
            Err(AmountError::TooManyDecimals { got: 9, max: 8 })
        );
        assert_eq!(
            parse("1.0000000", 6),
            Err(AmountError::TooManyDecimals { got: 7, max: 6 })
        );
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for bad in [
            "", ".", "1.", ".5", "-1", "+1", "1e3", "1,5", " 1", "0x10", "1_000", "NaN",
        ] {
            assert_eq!(parse(bad, 8), Err(AmountError::Syntax), "{bad:?}");
        }
        assert_eq!(parse(&"9".repeat(90), 8), Err(AmountError::TooLarge));
    }

    #[test]
    fn formats_shortest_exact() {
        assert_eq!(format(U256::from(150_000u64), 8), "0.0015");
        assert_eq!(format(U256::ZERO, 8), "0");
        assert_eq!(format(U256::from(100_000_000u64), 8), "1");
        assert_eq!(format(U256::from(1u64), 18), "0.000000000000000001");
        assert_eq!(format(U256::from(42u64), 0), "42");
        assert_eq!(format(U256::MAX, 18).len(), 79);
    }

    #[test]
    fn round_trips() {
        for s in ["0.1", "21000000", "0.00000001", "123.456"] {
            assert_eq!(format(parse(s, 8).unwrap(), 8), s);
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn units() -> impl Strategy<Value = U256> {
            prop_oneof![
                (0..u64::MAX).prop_map(U256::from),
                any::<[u8; 32]>().prop_map(U256::from_le_bytes),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn format_then_parse_is_the_identity(u in units(), decimals in 0u8..=30) {
                let text = format(u, decimals);
                prop_assert_eq!(parse(&text, decimals), Ok(u));
                // Shortest: no trailing zero after a point, no leading zero before a digit.
                prop_assert!(!(text.contains('.') && text.ends_with('0')), "{}", text);
                prop_assert!(!(text.len() > 1 && text.starts_with('0') && !text.starts_with("0.")), "{}", text);
            }

            #[test]
            fn a_decimal_string_parses_to_exactly_its_value(
                int in "[0-9]{1,20}", frac in "[0-9]{0,18}", decimals in 0u8..=18,
            ) {
                let text = if frac.is_empty() { int.clone() } else { format!("{int}.{frac}") };
                let got = parse(&text, decimals);
                if frac.len() > usize::from(decimals) {
                    // More decimals than the asset has: refused, never rounded.
                    prop_assert_eq!(got, Err(AmountError::TooManyDecimals { got: frac.len(), max: decimals }));
                } else {
                    let ten = U256::from(10u8);
                    let want = U256::from_str_radix(&int, 10).unwrap()
                        * ten.pow(U256::from(decimals))
                        + U256::from_str_radix(if frac.is_empty() { "0" } else { &frac }, 10).unwrap()
                            * ten.pow(U256::from(usize::from(decimals) - frac.len()));
                    prop_assert_eq!(got, Ok(want));
                }
            }

            #[test]
            fn anything_else_is_refused_without_a_panic(text in "\\PC{0,40}", decimals in 0u8..=30) {
                let plain = !text.is_empty()
                    && text.split('.').count() <= 2
                    && text.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                if !plain {
                    prop_assert_eq!(parse(&text, decimals), Err(AmountError::Syntax));
                }
            }

            #[test]
            fn near_misses_of_a_valid_amount_are_refused(
                base in "[0-9]{1,6}\\.[0-9]{1,6}", at in 0usize..16, junk in "[-+eE_, x.a-z]",
            ) {
                let mut text = base.clone();
                let at = at.min(text.len());
                text.insert_str(at, &junk);
                prop_assert!(parse(&text, 8).is_err(), "{} parsed", text);
            }
        }
    }
}
