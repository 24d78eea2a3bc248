//! Whether payments in several assets cover an invoice (`lifecycle.md`, "How the
//! status is computed"): the sum over the options of paid / due, in exact rational
//! arithmetic on base units. Amounts in different assets are never added up, and no
//! ratio is ever rounded before the decision: three options each paid a third of
//! what they are due cover the invoice exactly.

use num_bigint::BigUint;
use num_rational::Ratio;
use num_traits::{One, Zero};

use crate::amount::U256;

/// What one option is due (its amount less its tolerance) and what counted payments
/// paid in it, in the option's base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Term {
    pub(crate) due: U256,
    pub(crate) paid: U256,
}

/// How far payments cover an invoice: 1 is exactly covered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Coverage(Ratio<BigUint>);

impl Coverage {
    /// The coverage of `terms`. An option due nothing covers the invoice by itself.
    pub(crate) fn of(terms: &[Term]) -> Coverage {
        let mut sum = Ratio::<BigUint>::zero();
        for t in terms {
            if t.due.is_zero() {
                return Coverage(Ratio::one());
            }
            sum += Ratio::new(big(t.paid), big(t.due));
        }
        Coverage(sum)
    }

    /// Covered: at least 1.
    pub(crate) fn covers(&self) -> bool {
        self.0 >= Ratio::one()
    }

    /// What is still to pay in an option due `due` if the rest is paid in it: `due`
    /// times the part not yet covered, rounded up to the base unit, so that paying it
    /// always covers the invoice.
    pub(crate) fn remaining(&self, due: U256) -> U256 {
        if self.covers() {
            return U256::ZERO;
        }
        let left = (Ratio::one() - &self.0) * big(due);
        from_big(left.ceil().to_integer())
    }

    /// The ratio as a decimal string rounded down to 8 places (`paid_ratio`).
    pub(crate) fn ratio(&self) -> String {
        decimal(&self.0)
    }

    /// How far the ratio exceeds 1, else 0, rounded down to 8 places
    /// (`overpaid_ratio`).
    pub(crate) fn over(&self) -> String {
        if self.covers() {
            decimal(&(&self.0 - Ratio::one()))
        } else {
            "0".into()
        }
    }
}

const PLACES: u8 = 8;

fn decimal(r: &Ratio<BigUint>) -> String {
    let scaled = (r * BigUint::from(10u32).pow(u32::from(PLACES))).floor();
    crate::amount::format(from_big(scaled.to_integer()), PLACES)
}

fn big(u: U256) -> BigUint {
    BigUint::from_bytes_le(&u.to_le_bytes::<32>())
}

/// Ratios of amounts that fit U256 stay within it; past it, saturates.
fn from_big(b: BigUint) -> U256 {
    let bytes = b.to_bytes_le();
    if bytes.len() > 32 {
        return U256::MAX;
    }
    U256::from_le_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(paid: u64, due: u64) -> Term {
        Term {
            due: U256::from(due),
            paid: U256::from(paid),
        }
    }

    #[test]
    fn three_options_each_paid_a_third_cover_exactly() {
        // Thirds of amounts that a third does not divide evenly: 1/3 + 1/3 + 1/3 of
        // three different dues, not 0.333... rounded three times.
        let c = Coverage::of(&[t(1, 3), t(2, 6), t(7, 21)]);
        assert!(c.covers());
        assert_eq!(c.ratio(), "1");
        assert_eq!(c.over(), "0");
        assert_eq!(c.remaining(U256::from(21)), U256::ZERO);
        // One base unit short on one option is not covered.
        let c = Coverage::of(&[t(1, 3), t(2, 6), t(6, 21)]);
        assert!(!c.covers());
        assert_eq!(c.ratio(), "0.95238095");
    }

    #[test]
    fn remaining_rounds_up_so_that_paying_it_covers() {
        // Half paid in BTC: half of the USDT option is left.
        let paid = [t(150_000, 300_000), t(0, 10_000_000)];
        let c = Coverage::of(&paid);
        assert_eq!(c.ratio(), "0.5");
        assert_eq!(c.remaining(U256::from(10_000_000)), U256::from(5_000_000));
        // 1/3 paid: 2/3 of 10 is 6.666..., rounded up to 7 base units.
        let c = Coverage::of(&[t(1, 3), t(0, 10)]);
        let left = c.remaining(U256::from(10));
        assert_eq!(left, U256::from(7));
        assert!(Coverage::of(&[t(1, 3), t(7, 10)]).covers());
        assert!(!Coverage::of(&[t(1, 3), t(6, 10)]).covers());
    }

    #[test]
    fn one_option_is_the_plain_sum() {
        assert!(Coverage::of(&[t(100, 100)]).covers());
        assert!(!Coverage::of(&[t(99, 100)]).covers());
        let c = Coverage::of(&[t(250, 100)]);
        assert_eq!((c.ratio(), c.over()), ("2.5".into(), "1.5".into()));
        assert_eq!(Coverage::of(&[t(0, 100)]).ratio(), "0");
        assert_eq!(Coverage::of(&[]).ratio(), "0");
    }

    #[test]
    fn wei_amounts_stay_exact() {
        // 10^30 wei due, paid one wei short: not covered, and one wei remains.
        let due = U256::from(10u64).pow(U256::from(30));
        let c = Coverage::of(&[Term {
            due,
            paid: due - U256::from(1),
        }]);
        assert!(!c.covers());
        assert_eq!(c.remaining(due), U256::from(1));
        assert_eq!(c.ratio(), "0.99999999");
    }
}
