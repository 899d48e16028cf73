//! Path patterns of route rules: prefixes on segment boundaries and globs. Matching takes
//! time polynomial in the sizes of the pattern and the path: `**` is resolved by dynamic
//! programming over segments and `*` within a segment by the iterative wildcard algorithm,
//! so no pattern can make a request path cost exponential work.

use super::PathCase;

/// Path part of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PathPattern {
    /// Every path.
    Any,
    /// The path itself and everything below it, on segment boundaries.
    Prefix(String),
    /// Segments after the leading `/`.
    Glob(Vec<GlobSegment>),
}

/// One `/`-separated piece of a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GlobSegment {
    /// `**`: zero or more whole segments.
    AnySegments,
    /// One segment; `*` matches any run of characters (never `/`), `?` one character.
    One(String),
}

impl PathPattern {
    /// Parses the `path:` of a rule; the error is the reason, without the key.
    pub(super) fn parse(path: Option<&str>) -> Result<Self, &'static str> {
        let Some(path) = path else {
            return Ok(Self::Any);
        };
        if !path.starts_with('/') {
            return Err("must start with '/'");
        }
        if path.contains(['*', '?']) {
            let segments = path
                .split('/')
                .skip(1)
                .map(|s| match s {
                    "**" => GlobSegment::AnySegments,
                    _ => GlobSegment::One(s.to_owned()),
                })
                .collect();
            return Ok(Self::Glob(segments));
        }
        if path == "/" {
            return Ok(Self::Any);
        }
        Ok(Self::Prefix(path.trim_end_matches('/').to_owned()))
    }

    /// Whether `path` (normalised, starting with `/`) is covered.
    pub(super) fn matches(&self, path: &str, case: PathCase) -> bool {
        self.matches_counting(path, case, &mut 0)
    }

    /// [`Self::matches`], adding the work done to `steps` (one per DP cell or scanned byte).
    fn matches_counting(&self, path: &str, case: PathCase, steps: &mut u64) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => prefix_matches(prefix, path, case),
            Self::Glob(segments) => glob_matches(segments, path, case, steps),
        }
    }
}

/// `prefix` is `path` or an ancestor of it (the next character of `path` is `/`).
fn prefix_matches(prefix: &str, path: &str, case: PathCase) -> bool {
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    match path.get(..prefix.len()) {
        Some(head) => {
            bytes_equal(head, prefix, case)
                && (path.len() == prefix.len() || path[prefix.len()] == b'/')
        }
        None => false,
    }
}

/// Matches the segments of `path` against `pattern`.
///
/// `reachable[j]` says whether the pattern suffix processed so far matches the path segments
/// from `j` on; one pass per pattern segment, from the last, makes it
/// O(pattern segments x path segments) cells, each cell at most one segment comparison.
fn glob_matches(pattern: &[GlobSegment], path: &str, case: PathCase, steps: &mut u64) -> bool {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let n = segments.len();
    // The empty pattern suffix matches only the empty path suffix.
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut current = vec![false; n + 1];
    for glob in pattern.iter().rev() {
        match glob {
            GlobSegment::AnySegments => {
                // `**` takes no segment (next[j]) or one more (current[j + 1]).
                current[n] = next[n];
                for j in (0..n).rev() {
                    *steps += 1;
                    current[j] = next[j] || current[j + 1];
                }
            }
            GlobSegment::One(one) => {
                current[n] = false;
                for j in (0..n).rev() {
                    *steps += 1;
                    current[j] = next[j + 1] && segment_matches(one, segments[j], case, steps);
                }
            }
        }
        std::mem::swap(&mut current, &mut next);
    }
    next[0]
}

/// Glob within one segment: `*` any run of characters, `?` exactly one character.
///
/// The iterative wildcard algorithm: on a mismatch only the last `*` is retried, one
/// character further. The text position it retries from never moves back, so the loop runs
/// at most (text length + 1) x (pattern length + 1) times.
fn segment_matches(pattern: &str, text: &str, case: PathCase, steps: &mut u64) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Pattern index of the last `*` and the text index its current attempt resumes at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        *steps += 1;
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                ti += utf8_len(t[ti]);
            }
            Some(&c) if bytes_equal(&[c], &t[ti..=ti], case) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((star_pi, star_ti)) => {
                    // The `*` swallows one more character; retry the rest after it.
                    let resume = star_ti + utf8_len(t[star_ti]);
                    star = Some((star_pi, resume));
                    pi = star_pi + 1;
                    ti = resume;
                }
                None => return false,
            },
        }
    }
    let rest = p.get(pi..).unwrap_or_default();
    *steps += rest.len() as u64;
    rest.iter().all(|&c| c == b'*')
}

/// Length of the UTF-8 sequence that starts with `lead` (1 for a stray continuation byte,
/// which a `&str` never starts a character with).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Byte-wise equality, ASCII letters folded when paths compare case-insensitively.
fn bytes_equal(a: &[u8], b: &[u8], case: PathCase) -> bool {
    match case {
        PathCase::Sensitive => a == b,
        PathCase::Insensitive => a.eq_ignore_ascii_case(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn glob(pattern: &str) -> PathPattern {
        let parsed = PathPattern::parse(Some(pattern)).unwrap();
        assert!(matches!(parsed, PathPattern::Glob(_)), "{pattern}");
        parsed
    }

    /// `pattern` as a glob even without wildcards (a rule would make it a prefix).
    fn as_glob(pattern: &str) -> PathPattern {
        let segments = pattern
            .split('/')
            .skip(1)
            .map(|s| match s {
                "**" => GlobSegment::AnySegments,
                _ => GlobSegment::One(s.to_owned()),
            })
            .collect();
        PathPattern::Glob(segments)
    }

    fn steps(pattern: &PathPattern, path: &str, case: PathCase) -> (bool, u64) {
        let mut steps = 0;
        let matched = pattern.matches_counting(path, case, &mut steps);
        (matched, steps)
    }

    /// The largest number of steps the complexity argument allows: every DP cell, each
    /// comparing its longest segments in full ((text + 1) x (pattern + 1) iterations plus the
    /// scans before the first `*` and after the text), with room to spare for constants.
    fn step_bound(pattern: &str, path: &str) -> u64 {
        let longest = |s: &str| s.split('/').map(str::len).max().unwrap_or(0) as u64;
        let count = |s: &str| s.split('/').count() as u64;
        (count(pattern) + 1) * (count(path) + 1) * (longest(pattern) + 3) * (longest(path) + 3)
    }

    /// The former recursive matcher (exponential on `**` and `*` runs): the oracle for the
    /// property tests on small inputs.
    fn reference(pattern: &str, path: &str) -> bool {
        fn segments(pattern: &[&str], path: &[&str]) -> bool {
            match pattern.split_first() {
                None => path.is_empty(),
                Some((&"**", rest)) => (0..=path.len()).any(|skip| segments(rest, &path[skip..])),
                Some((first, rest)) => match path.split_first() {
                    Some((seg, path_rest)) => {
                        let p: Vec<char> = first.chars().collect();
                        let t: Vec<char> = seg.chars().collect();
                        one(&p, &t) && segments(rest, path_rest)
                    }
                    None => false,
                },
            }
        }
        fn one(pattern: &[char], text: &[char]) -> bool {
            match pattern.split_first() {
                None => text.is_empty(),
                Some(('*', rest)) => (0..=text.len()).any(|skip| one(rest, &text[skip..])),
                Some(('?', rest)) => !text.is_empty() && one(rest, &text[1..]),
                Some((c, rest)) => text.first() == Some(c) && one(rest, &text[1..]),
            }
        }
        let pattern: Vec<&str> = pattern.split('/').skip(1).collect();
        let path: Vec<&str> = path.split('/').skip(1).collect();
        segments(&pattern, &path)
    }

    #[test]
    fn glob_table() {
        let cases = [
            ("/a/*", "/a/b", true),
            ("/a/*", "/a/b/c", false),
            ("/a/**", "/a/b/c", true),
            ("/a/**", "/a", true),
            ("/a/*.json", "/a/x.json", true),
            ("/a/*.json", "/a/x.jsonx", false),
            ("/v?/x", "/v1/x", true),
            ("/v?/x", "/v10/x", false),
            ("/**/secret", "/a/b/secret", true),
            ("/**/secret", "/a/b/secrets", false),
            ("/**", "/", true),
            ("/**/**", "/a", true),
            ("/a/**/b/**/c", "/a/b/c", true),
            ("/a/**/b/**/c", "/a/x/b/y/z/c", true),
            ("/a/**/b/**/c", "/a/c/b", false),
            ("/*", "/", true),
            ("/?", "/", false),
            ("/?", "/é", true),
            ("/?x", "/éx", true),
            ("/*é?", "/aéé", true),
            ("/a*b*c", "/abbbc", true),
            ("/a*b*c", "/acb", false),
            ("/**.txt", "/x/y.txt", false),
            ("/**.txt", "/y.txt", true),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(
                glob(pattern).matches(path, PathCase::Sensitive),
                expected,
                "{pattern} vs {path}"
            );
            assert_eq!(
                reference(pattern, path),
                expected,
                "oracle: {pattern} vs {path}"
            );
        }
    }

    #[test]
    fn prefix_table() {
        let cases = [
            ("/data", "/data", true),
            ("/data", "/data/x", true),
            ("/data/", "/data/x", true),
            ("/data", "/database", false),
            ("/data", "/dat", false),
            ("/data", "/", false),
            ("/", "/anything", true),
        ];
        for (prefix, path, expected) in cases {
            let p = PathPattern::parse(Some(prefix)).unwrap();
            assert_eq!(
                p.matches(path, PathCase::Sensitive),
                expected,
                "{prefix} vs {path}"
            );
        }
        assert_eq!(PathPattern::parse(Some("data")), Err("must start with '/'"));
        assert_eq!(PathPattern::parse(None), Ok(PathPattern::Any));
    }

    #[test]
    fn path_case_table() {
        use PathCase::{Insensitive, Sensitive};
        let cases = [
            ("/admin", "/ADMIN/x", Sensitive, false),
            ("/admin", "/ADMIN/x", Insensitive, true),
            ("/admin", "/Admin", Insensitive, true),
            ("/admin", "/ADMINS", Insensitive, false),
            ("/Admin", "/admin", Sensitive, false),
            ("/Admin", "/admin", Insensitive, true),
            ("/files/*.TXT", "/files/a.txt", Sensitive, false),
            ("/files/*.TXT", "/files/a.txt", Insensitive, true),
            ("/**/Secret", "/a/b/SECRET", Insensitive, true),
            ("/**/Secret", "/a/b/SECRET", Sensitive, false),
            // Only ASCII letters fold.
            ("/É", "/é", Insensitive, false),
            ("/?É", "/aé", Insensitive, false),
        ];
        for (pattern, path, case, expected) in cases {
            let p = PathPattern::parse(Some(pattern)).unwrap();
            assert_eq!(
                p.matches(path, case),
                expected,
                "{pattern} vs {path} ({case:?})"
            );
        }
    }

    #[test]
    fn nested_double_stars_take_polynomial_steps() {
        let pattern = "/x/**/**/**/**/y";
        let path = format!("/x/{}b", "a/".repeat(600));
        let g = glob(pattern);
        let (matched, taken) = steps(&g, &path, PathCase::Sensitive);
        assert!(!matched);
        // 6 pattern and 602 path segments: a few steps per DP cell. The old backtracking
        // matcher tried every way to split 600 segments among four `**`, ~5.4e9 ways.
        let cells = (6 + 1) * (602 + 1);
        assert!(taken <= 4 * cells, "{taken} steps for {cells} cells");
        assert!(taken <= step_bound(pattern, &path));
        // Linear in the path: twice the segments, at most about twice the work.
        let longer = format!("/x/{}b", "a/".repeat(1200));
        let (matched, taken_longer) = steps(&g, &longer, PathCase::Sensitive);
        assert!(!matched);
        assert!(
            taken_longer <= 2 * taken + 64,
            "{taken} then {taken_longer}"
        );
        // And it still finds the match when there is one.
        let hit = format!("/x/{}y", "a/".repeat(600));
        assert!(g.matches(&hit, PathCase::Sensitive));
    }

    #[test]
    fn many_stars_in_one_segment_take_polynomial_steps() {
        let text = "a".repeat(600);
        let cases = [
            ("/*a*a*a*a*b", false),
            ("/*a*a*a*a*a", true),
            ("/*?*?*?*?*b", false),
            ("/a*a*a*a*a*a*a*a*a*a*a*", true),
        ];
        for (pattern, expected) in cases {
            let path = format!("/{text}");
            let (matched, taken) = steps(&glob(pattern), &path, PathCase::Sensitive);
            assert_eq!(matched, expected, "{pattern}");
            let (p, t) = (pattern.len() as u64, text.len() as u64);
            assert!(taken <= (p + 2) * (t + 2), "{pattern}: {taken} steps");
        }
        // The same patterns folded: case folding does not change the work.
        let upper = format!("/{}", "A".repeat(600));
        let (matched, taken) = steps(&glob("/*a*a*a*a*b"), &upper, PathCase::Insensitive);
        assert!(!matched);
        assert!(taken <= 13 * 602, "{taken} steps");
    }

    /// Globs over a small alphabet, so that stars and literals often collide.
    fn small_glob() -> impl Strategy<Value = String> {
        "(/(\\*\\*|[abé*?]{0,5})){1,6}"
    }

    fn small_path() -> impl Strategy<Value = String> {
        "(/[abéAB]{0,6}){0,8}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn glob_agrees_with_the_reference(pattern in small_glob(), path in small_path()) {
            let g = as_glob(&pattern);
            let path = if path.is_empty() { "/".to_owned() } else { path };
            prop_assert_eq!(g.matches(&path, PathCase::Sensitive), reference(&pattern, &path));
            // Insensitive is sensitive on ASCII-lowered inputs.
            prop_assert_eq!(
                g.matches(&path, PathCase::Insensitive),
                reference(&pattern.to_ascii_lowercase(), &path.to_ascii_lowercase())
            );
        }

        #[test]
        fn any_rule_on_any_path_is_bounded(
            rule in "/\\PC{0,40}",
            path in "/\\PC{0,200}",
            insensitive in any::<bool>(),
        ) {
            let case = if insensitive { PathCase::Insensitive } else { PathCase::Sensitive };
            let pattern = PathPattern::parse(Some(&rule)).unwrap();
            let (_, taken) = steps(&pattern, &path, case);
            prop_assert!(taken <= step_bound(&rule, &path), "{} steps", taken);
        }

        #[test]
        fn wildcard_heavy_rules_are_bounded(
            rule in "(/(\\*\\*|[a*?]{0,12})){1,10}",
            path in "(/a{0,30}){1,60}",
        ) {
            let (_, taken) = steps(&as_glob(&rule), &path, PathCase::Sensitive);
            prop_assert!(taken <= step_bound(&rule, &path), "{} steps", taken);
        }

        #[test]
        fn prefix_matches_on_segment_boundaries(
            rule in "(/[abAB]{0,3}){1,4}/?",
            path in "(/[abAB]{0,3}){0,6}",
            insensitive in any::<bool>(),
        ) {
            let path = if path.is_empty() { "/".to_owned() } else { path };
            let case = if insensitive { PathCase::Insensitive } else { PathCase::Sensitive };
            let pattern = PathPattern::parse(Some(&rule)).unwrap();
            let (prefix, candidate) = match case {
                PathCase::Sensitive => (rule.trim_end_matches('/').to_owned(), path.clone()),
                PathCase::Insensitive => (
                    rule.trim_end_matches('/').to_ascii_lowercase(),
                    path.to_ascii_lowercase(),
                ),
            };
            let expected = candidate == prefix || candidate.starts_with(&format!("{prefix}/"));
            prop_assert_eq!(pattern.matches(&path, case), expected);
        }
    }
}
