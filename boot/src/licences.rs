//! The licence check: every package in the dependency graph (from `cargo
//! metadata`) must carry an SPDX licence expression that the allow list in
//! deny.toml satisfies. GPL-family licences are never allowed. deny.toml is
//! also the configuration for `cargo deny check licenses` where cargo-deny is
//! installed; this check needs nothing beyond cargo.

use std::path::Path;

/// A package whose licence is not acceptable, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub package: String,
    pub reason: String,
}

/// Checks the workspace at `root` with the built-in check and, where it is
/// installed, with `cargo deny check licenses` too; returns a summary.
pub fn check(root: &Path) -> Result<String, String> {
    let count = check_builtin(root)?;
    let cargo_deny = match run_cargo_deny(root)? {
        true => "cargo-deny agrees",
        false => "cargo-deny not installed, built-in check only",
    };
    Ok(format!(
        "{count} packages allowed by deny.toml; {cargo_deny}"
    ))
}

/// Runs `cargo deny check licenses` if cargo-deny is installed; Ok(false) if
/// it is not.
fn run_cargo_deny(root: &Path) -> Result<bool, String> {
    let installed = crate::cargo::command(root)
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        return Ok(false);
    }
    let output = crate::cargo::command(root)
        .args(["deny", "--log-level", "error", "check", "licenses"])
        .output()
        .map_err(|error| format!("cannot run cargo deny: {error}"))?;
    if output.status.success() {
        Ok(true)
    } else {
        Err(format!(
            "cargo deny check licenses failed:\n{}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The built-in check; returns the number of packages checked.
fn check_builtin(root: &Path) -> Result<usize, String> {
    let config = std::fs::read_to_string(root.join("deny.toml"))
        .map_err(|error| format!("cannot read deny.toml: {error}"))?;
    let allowed = allow_list(&config)?;
    let packages = crate::cargo::packages(root, &["--all-features"])?;
    let violations: Vec<Violation> = packages
        .iter()
        .filter_map(|package| {
            let name = format!(
                "{} {}",
                package["name"].as_str()?,
                package["version"].as_str()?
            );
            let reason = match package["license"].as_str() {
                None => "no SPDX licence expression (only a licence file)".to_string(),
                Some(expression) => match acceptable(expression, &allowed) {
                    Ok(true) => return None,
                    Ok(false) => format!("`{expression}` is not satisfied by the allow list"),
                    Err(error) => format!("`{expression}`: {error}"),
                },
            };
            Some(Violation {
                package: name,
                reason,
            })
        })
        .collect();
    if violations.is_empty() {
        return Ok(packages.len());
    }
    let lines: Vec<String> = violations
        .iter()
        .map(|violation| format!("  {}: {}", violation.package, violation.reason))
        .collect();
    Err(format!(
        "licence check failed for {} package(s):\n{}",
        violations.len(),
        lines.join("\n")
    ))
}

/// The `allow = [...]` list of deny.toml's `[licenses]` table.
pub fn allow_list(config: &str) -> Result<Vec<String>, String> {
    let mut in_licenses = false;
    let mut collecting = false;
    let mut allowed = Vec::new();
    for raw_line in config.lines() {
        let line = raw_line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') && !collecting {
            in_licenses = line == "[licenses]";
            continue;
        }
        let mut rest = line;
        if !collecting {
            if !in_licenses {
                continue;
            }
            let Some(value) = line
                .strip_prefix("allow")
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
            else {
                continue;
            };
            let Some(list) = value.trim_start().strip_prefix('[') else {
                return Err("deny.toml: [licenses] allow must be a list".into());
            };
            collecting = true;
            rest = list;
        }
        let (items, closed) = match rest.split_once(']') {
            Some((items, _)) => (items, true),
            None => (rest, false),
        };
        for item in items
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let name = item
                .strip_prefix('"')
                .and_then(|item| item.strip_suffix('"'))
                .ok_or_else(|| format!("deny.toml: allow list item {item} is not a string"))?;
            allowed.push(name.to_string());
        }
        if closed {
            return if allowed.is_empty() {
                Err("deny.toml: the allow list is empty".into())
            } else {
                Ok(allowed)
            };
        }
    }
    Err("deny.toml: no [licenses] allow list".into())
}

/// Whether an SPDX expression (`A OR B`, `A AND B`, `A WITH X`, parentheses,
/// and the legacy `A/B` for OR) is satisfied by the allowed licences.
pub fn acceptable(expression: &str, allowed: &[String]) -> Result<bool, String> {
    let tokens = tokenize(expression);
    let mut parser = Parser {
        tokens: &tokens,
        position: 0,
        allowed,
    };
    let value = parser.or_expression()?;
    if parser.position != tokens.len() {
        return Err(format!("unexpected `{}`", tokens[parser.position]));
    }
    Ok(value)
}

fn tokenize(expression: &str) -> Vec<String> {
    let spaced = expression
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    spaced.split_whitespace().map(String::from).collect()
}

struct Parser<'a> {
    tokens: &'a [String],
    position: usize,
    allowed: &'a [String],
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.position).map(String::as_str)
    }

    fn or_expression(&mut self) -> Result<bool, String> {
        let mut value = self.and_expression()?;
        while self.peek() == Some("OR") {
            self.position += 1;
            value |= self.and_expression()?;
        }
        Ok(value)
    }

    fn and_expression(&mut self) -> Result<bool, String> {
        let mut value = self.term()?;
        while self.peek() == Some("AND") {
            self.position += 1;
            value &= self.term()?;
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<bool, String> {
        let Some(token) = self.peek().map(String::from) else {
            return Err("expression ends too early".into());
        };
        self.position += 1;
        if token == "(" {
            let value = self.or_expression()?;
            if self.peek() != Some(")") {
                return Err("missing `)`".into());
            }
            self.position += 1;
            return Ok(value);
        }
        if matches!(token.as_str(), ")" | "OR" | "AND" | "WITH") {
            return Err(format!("unexpected `{token}`"));
        }
        let mut licence = token;
        if self.peek() == Some("WITH") {
            let Some(exception) = self.tokens.get(self.position + 1) else {
                return Err("`WITH` without an exception".into());
            };
            licence = format!("{licence} WITH {exception}");
            self.position += 2;
        }
        Ok(self.is_allowed(&licence))
    }

    /// An allowed licence; a GPL-family one never is, whatever the list says.
    fn is_allowed(&self, licence: &str) -> bool {
        let base = licence.split(" WITH ").next().unwrap_or(licence);
        let base_name = base.trim_end_matches('+');
        let copyleft = ["GPL", "AGPL", "LGPL"]
            .iter()
            .any(|family| base_name.starts_with(family));
        if copyleft {
            return false;
        }
        self.allowed
            .iter()
            .any(|allowed| allowed == licence || allowed == base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        ["MIT", "Apache-2.0", "BSD-3-Clause", "Unicode-3.0"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn expressions() {
        let allowed = allowed();
        let check = |expression| acceptable(expression, &allowed);
        assert_eq!(check("MIT"), Ok(true));
        assert_eq!(check("MIT OR Apache-2.0"), Ok(true));
        assert_eq!(check("MIT/Apache-2.0"), Ok(true));
        assert_eq!(check("GPL-2.0 OR MIT"), Ok(true));
        assert_eq!(check("GPL-2.0"), Ok(false));
        assert_eq!(check("MIT AND GPL-3.0-or-later"), Ok(false));
        assert_eq!(check("(MIT OR Apache-2.0) AND Unicode-3.0"), Ok(true));
        assert_eq!(check("Apache-2.0 WITH LLVM-exception"), Ok(true));
        assert_eq!(check("LGPL-2.1-only WITH GCC-exception-2.0"), Ok(false));
        assert_eq!(check("MPL-2.0"), Ok(false));
        assert!(check("MIT OR").is_err());
        assert!(check("(MIT").is_err());
        assert!(check("MIT Apache-2.0").is_err());
    }

    #[test]
    fn gpl_is_refused_even_if_listed() {
        let allowed = vec!["GPL-2.0".to_string(), "LGPL-2.1-or-later".into()];
        assert_eq!(acceptable("GPL-2.0", &allowed), Ok(false));
        assert_eq!(acceptable("LGPL-2.1-or-later", &allowed), Ok(false));
    }

    #[test]
    fn the_allow_list_comes_from_the_licenses_table() {
        let config = "[graph]\nallow = [\"nope\"]\n[licenses]\n# comment\nallow = [\n  \"MIT\", # why\n  \"Apache-2.0\",\n]\n[bans]\n";
        assert_eq!(
            allow_list(config),
            Ok(vec!["MIT".to_string(), "Apache-2.0".into()])
        );
        assert_eq!(
            allow_list("[licenses]\nallow = [\"Zlib\"]\n"),
            Ok(vec!["Zlib".to_string()])
        );
        assert!(allow_list("[licenses]\n").is_err());
        assert!(allow_list("[licenses]\nallow = [MIT]\n").is_err());
    }

    #[test]
    fn the_repository_deny_toml_parses_and_bans_gpl() {
        let config = include_str!("../../deny.toml");
        let allowed = allow_list(config).expect("deny.toml parses");
        assert!(allowed.iter().any(|licence| licence == "MIT"));
        assert!(!allowed.iter().any(|licence| licence.contains("GPL")));
    }
}
