//! The crate's module dependencies point one way.
//!
//! Reads every file under `src/` (not `main.rs`, the binary on top),
//! collects the `crate::<module>` paths each top-level module uses (and
//! `super::` paths that climb to the crate root), and fails when the graph
//! has a cycle, naming it and a use behind each of its edges. It also
//! checks the order written at the top of `lib.rs`: every module is listed,
//! and each uses only modules listed before it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `from` → `to` → the first use seen (`file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/a.rs` and `src/a/mod.rs` are `[a]`,
/// `src/a/b.rs` is `[a, b]`; `lib.rs` is `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && !(parts.is_empty() && stem == "lib") {
        parts.push(stem.to_string());
    }
    parts
}

/// The source with comments, string and character literals blanked out
/// (newlines kept, so line numbers still hold).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &c[i..j.min(c.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '\'' {
            // A character literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for &ch in &c[i..=e] {
                        blank(&mut out, ch);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c[i]);
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The first identifier of each item of a path group `{a, b::c, d::{e}}`
/// starting at `s` (just after the `{`).
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    let take = |item: &mut String, heads: &mut Vec<String>| {
        let head: String = item
            .trim()
            .chars()
            .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
            .collect();
        if !head.is_empty() {
            heads.push(head);
        }
        item.clear();
    };
    for ch in s.chars() {
        match ch {
            '{' => {
                depth += 1;
                item.push(ch);
            }
            '}' if depth == 0 => {
                take(&mut item, &mut heads);
                break;
            }
            '}' => {
                depth -= 1;
                item.push(ch);
            }
            ',' if depth == 0 => take(&mut item, &mut heads),
            _ => item.push(ch),
        }
    }
    heads
}

/// The top-level names a file's code reaches through `crate::` (or
/// `super::` climbing to the root), with their line numbers. `path` is the
/// file's module path.
fn crate_uses(code: &str, path: &[String]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
            let at_root =
                if boundary && line[i..].starts_with("crate::") && (i == 0 || b[i - 1] != b'$') {
                    Some(i + "crate::".len())
                } else if boundary && line[i..].starts_with("super::") {
                    let mut j = i;
                    let mut ups = 0;
                    while line[j..].starts_with("super::") {
                        ups += 1;
                        j += "super::".len();
                    }
                    (ups >= path.len()).then_some(j)
                } else {
                    None
                };
            let Some(start) = at_root else {
                i += 1;
                continue;
            };
            let rest = line[start..].trim_start();
            if let Some(group) = rest.strip_prefix('{') {
                // A group may run over several lines.
                let offset = code.lines().take(n).map(|l| l.len() + 1).sum::<usize>()
                    + (line.len() - group.len());
                for h in group_heads(&code[offset..]) {
                    found.push((h, n + 1));
                }
            } else {
                let head: String = rest
                    .chars()
                    .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                    .collect();
                if !head.is_empty() {
                    found.push((head, n + 1));
                }
            }
            i = start;
        }
    }
    found
}

/// The dependency graph between the crate's top-level modules.
fn graph() -> (BTreeSet<String>, Graph) {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeSet::new();
    let mut per_file = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        if rel == Path::new("main.rs") {
            continue;
        }
        let path = module_path(rel);
        if let Some(top) = path.first() {
            modules.insert(top.clone());
        }
        per_file.push((rel.to_path_buf(), path));
    }
    let mut g = Graph::new();
    for (rel, path) in per_file {
        let Some(from) = path.first() else {
            continue; // lib.rs declares the modules
        };
        let text = std::fs::read_to_string(src.join(&rel)).expect("readable source");
        for (to, line) in crate_uses(&code_only(&text), &path) {
            if &to != from && modules.contains(&to) {
                g.entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("src/{}:{line}", rel.display()));
            }
        }
    }
    (modules, g)
}

/// A cycle of the graph, if it has one (`a → b → … → a`).
fn find_cycle(modules: &BTreeSet<String>, g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        m: &str,
        g: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(m.to_string(), Mark::Open);
        stack.push(m.to_string());
        for to in g.get(m).into_iter().flat_map(|e| e.keys()) {
            match marks.get(to).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let at = stack.iter().position(|s| s == to).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(to.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(to, g, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(m.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in modules {
        if marks.get(m).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(m, g, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn describe(g: &Graph) -> String {
    g.iter()
        .map(|(from, tos)| {
            let tos: Vec<&str> = tos.keys().map(String::as_str).collect();
            format!("  {from} → {}", tos.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn module_dependencies_are_acyclic() {
    let (modules, g) = graph();
    assert!(modules.len() > 5, "found too few modules: {modules:?}");
    if let Some(cycle) = find_cycle(&modules, &g) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} → {}  ({})", w[0], w[1], g[&w[0]][&w[1]]))
            .collect();
        panic!(
            "the module dependencies of hsm-node have a cycle: {}\n{}\n\nall dependencies:\n{}",
            cycle.join(" → "),
            edges.join("\n"),
            describe(&g)
        );
    }
}

/// The order at the top of lib.rs: the `//!` line starting `Dependencies
/// point one way:` followed by the modules, lowest first, separated by `<`
/// (or `,` for modules of the same level), up to the first `.`.
fn documented_order() -> Option<Vec<Vec<String>>> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).ok()?;
    let doc: String = lib
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join(" ");
    let (_, rest) = doc.split_once("Dependencies point one way:")?;
    let (list, _) = rest.split_once('.')?;
    Some(
        list.split('<')
            .map(|level| {
                level
                    .split(',')
                    .map(|m| m.trim().trim_matches('`').to_string())
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .collect(),
    )
}

#[test]
fn lib_rs_lists_the_order() {
    let (modules, g) = graph();
    let order = documented_order().expect(
        "lib.rs says `Dependencies point one way: a < b, c < d.` in its top comment, lowest first",
    );
    let level: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .flat_map(|(i, ms)| ms.iter().map(move |m| (m.as_str(), i)))
        .collect();
    for m in &modules {
        assert!(
            level.contains_key(m.as_str()),
            "module `{m}` is missing from the order in lib.rs's top comment"
        );
    }
    for m in level.keys() {
        assert!(
            modules.contains(*m),
            "lib.rs's order names `{m}`, which is no module of the crate"
        );
    }
    for (from, tos) in &g {
        for (to, at) in tos {
            assert!(
                level[to.as_str()] < level[from.as_str()],
                "`{from}` uses `{to}` ({at}), but lib.rs's order does not put `{to}` below `{from}`"
            );
        }
    }
}

#[test]
fn the_scanner_reads_what_rustc_reads() {
    let src = r##"
use crate::{alpha, beta::{x, y}, self};
use super::gamma;
// crate::commented
/* crate::blocked /* nested crate::x */ */
let s = "crate::quoted";
let r = r#"crate::raw"#;
let c = '"'; let d = crate::delta::f('x');
fn f<'a>(x: &'a str) -> &'a str { crate::epsilon::g(x) }
macro_rules! m { () => { $crate::zeta } }
"##;
    let names: Vec<String> = crate_uses(&code_only(src), &["me".into()])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        ["alpha", "beta", "self", "gamma", "delta", "epsilon"],
        "{}",
        code_only(src)
    );
    // `super::` from a file one level down stays inside its module.
    assert!(crate_uses("use super::inner;", &["me".into(), "sub".into()]).is_empty());
    assert_eq!(
        crate_uses("use super::super::top;", &["me".into(), "sub".into()]),
        [("top".to_string(), 1)]
    );
}

#[test]
fn a_cycle_is_found() {
    let mut g = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), String::new());
    };
    edge(&mut g, "a", "b");
    edge(&mut g, "b", "c");
    let modules: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    assert_eq!(find_cycle(&modules, &g), None);
    edge(&mut g, "c", "a");
    assert_eq!(
        find_cycle(&modules, &g),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
}
