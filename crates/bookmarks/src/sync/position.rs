//! Positions as fractional keys: a child's place among its siblings is a string that sorts
//! between its neighbours' strings, so a move or an insertion changes one item only and two
//! replicas that reorder different items merge without renumbering anything.
//!
//! A key is a base-62 fraction `0.d₁d₂…` written with the digits `0-9A-Za-z` (in ASCII order, so
//! byte order is numeric order), never empty and never ending in `0` (so there is always room
//! below it). Siblings sort by (key, GUID): equal keys made by two replicas at once still give
//! one order everywhere.

/// The digits, in increasing order (ASCII order).
const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE: u32 = 62;
/// The longest key accepted from a peer.
pub const MAX_KEY_LEN: usize = 1024;

fn value(digit: u8) -> Option<u32> {
    DIGITS.iter().position(|&d| d == digit).map(|p| p as u32)
}

fn digit(value: u32) -> u8 {
    DIGITS.get(value as usize).copied().unwrap_or(b'z')
}

/// Whether `key` is a well-formed position key.
pub fn is_valid(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && !key.ends_with('0')
        && key.bytes().all(|b| value(b).is_some())
}

/// A key strictly between `low` and `high` (`None`: no bound on that side). When the bounds are
/// not valid or not in order, the upper bound is ignored, so the result is always a valid key
/// above `low`.
pub fn between(low: Option<&str>, high: Option<&str>) -> String {
    let low = low.filter(|k| is_valid(k)).unwrap_or("").as_bytes();
    let mut high = high
        .filter(|k| is_valid(k))
        .map(str::as_bytes)
        .filter(|h| *h > low);
    // One-sided bounds step by one digit instead of halving, so appending (or prepending) one
    // item at a time grows keys by one character every ~60 items rather than every ~6.
    match (low.is_empty(), high) {
        (true, None) => return "V".to_owned(),
        (false, None) => {
            if let Some(i) = low
                .iter()
                .position(|&b| value(b).is_some_and(|v| v + 1 < BASE))
            {
                let mut out = low.get(..i).unwrap_or_default().to_vec();
                out.push(digit(
                    value(low.get(i).copied().unwrap_or(b'0')).unwrap_or(0) + 1,
                ));
                return String::from_utf8(out).unwrap_or_else(|_| "V".to_owned());
            }
        }
        (true, Some(h)) => {
            if let Some(i) = h.iter().position(|&b| value(b).is_some_and(|v| v > 1)) {
                let mut out = h.get(..i).unwrap_or_default().to_vec();
                out.push(digit(
                    value(h.get(i).copied().unwrap_or(b'V')).unwrap_or(2) - 1,
                ));
                return String::from_utf8(out).unwrap_or_else(|_| "V".to_owned());
            }
        }
        (false, Some(_)) => {}
    }
    let mut out = Vec::with_capacity(low.len() + 1);
    let mut i = 0;
    loop {
        let a = low.get(i).and_then(|&b| value(b)).unwrap_or(0);
        let b = match high {
            // A bound that ended is 0 from here on; it cannot end while equal to `low`'s
            // prefix, since it is strictly above `low` and has no trailing zero.
            Some(h) => h.get(i).and_then(|&b| value(b)).unwrap_or(0),
            None => BASE,
        };
        if b > a + 1 || i > 2 * MAX_KEY_LEN {
            // (The length guard cannot trigger for bounds that passed the checks above.)
            out.push(digit((a + b.max(a + 2)) / 2));
            break;
        }
        out.push(digit(a));
        if b == a + 1 {
            // Anything that starts with this prefix and is above `low` is below `high`.
            high = None;
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| "V".to_owned())
}

/// `count` increasing keys strictly between `low` and `high`, spread by bisection so their
/// length grows with the logarithm of `count`.
pub fn spread(low: Option<&str>, high: Option<&str>, count: usize) -> Vec<String> {
    let mut keys = Vec::with_capacity(count);
    fill(low, high, count, &mut keys);
    keys
}

fn fill(low: Option<&str>, high: Option<&str>, count: usize, out: &mut Vec<String>) {
    if count == 0 {
        return;
    }
    let middle = between(low, high);
    let left = count / 2;
    fill(low, Some(&middle), left, out);
    out.push(middle.clone());
    fill(Some(&middle), high, count - left - 1, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_between_their_bounds() {
        let cases = [
            (None, None),
            (Some("V"), None),
            (None, Some("V")),
            (Some("V"), Some("W")),
            (Some("V"), Some("V1")),
            (Some("z"), None),
            (Some("zzz"), None),
            (None, Some("01")),
            (Some("1"), Some("2")),
        ];
        for (low, high) in cases {
            let key = between(low, high);
            assert!(is_valid(&key), "{key:?}");
            if let Some(low) = low {
                assert!(key.as_str() > low, "{low:?} < {key:?}");
            }
            if let Some(high) = high {
                assert!(key.as_str() < high, "{key:?} < {high:?}");
            }
        }
    }

    #[test]
    fn repeated_insertion_at_the_front_stays_ordered() {
        let mut first = "V".to_owned();
        for _ in 0..5000 {
            let key = between(None, Some(&first));
            assert!(key < first && is_valid(&key));
            first = key;
        }
        assert!(first.len() < 200, "{}", first.len());
        let mut last = "V".to_owned();
        for _ in 0..5000 {
            let key = between(Some(&last), None);
            assert!(key > last && is_valid(&key));
            last = key;
        }
        assert!(last.len() < 200, "{}", last.len());
    }

    #[test]
    fn invalid_bounds_still_give_a_valid_key() {
        for (low, high) in [
            (Some("V"), Some("A")),
            (Some("!"), Some("0")),
            (Some("V"), Some("V")),
        ] {
            assert!(is_valid(&between(low, high)));
        }
        assert!(!is_valid(""));
        assert!(!is_valid("A0"));
        assert!(!is_valid("A-"));
        let keys = spread(None, None, 100_000);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(
            keys.iter().all(|k| is_valid(k) && k.len() <= 6),
            "bisection keeps keys short"
        );
        let keys = spread(Some("V"), Some("W"), 1000);
        assert!(keys
            .iter()
            .all(|k| k.as_str() > "V" && k.as_str() < "W" && is_valid(k)));
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
