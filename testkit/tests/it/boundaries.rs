//! Crate boundaries, kept by tests that fail when one is crossed:
//! - no module of any crate depends on itself through others (modules form no cycles): every
//!   crate root (`src/lib.rs`, `tests/it/main.rs`, `benches/*/main.rs`) is read, its modules
//!   found from the files, and each `crate::`, `super::` and `self::` path (in `use` trees and
//!   in code, test modules included, since they compile too) becomes an edge between the two
//!   sibling modules it connects; a strongly connected group of siblings fails the test,
//!   naming the lines that form it;
//! - the shipped sender (`cargo build -p kube-relay-sender`, as the Dockerfile runs it) does
//!   not link the simulator, nor the deprecated `serde_yaml` it brings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A module's path below its crate root (`[]` is the root).
type ModPath = Vec<String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .to_path_buf()
}

/// One compiled crate: its root file's directory and every module file below it, as
/// (path relative to that directory, text).
struct CrateSource {
    name: String,
    files: Vec<(PathBuf, String)>,
}

/// The `.rs` files under `dir`, recursively, relative to it.
fn rust_files(dir: &Path, below: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir.join(below)) else {
        return;
    };
    for entry in entries.flatten() {
        let relative = below.join(entry.file_name());
        let path = dir.join(&relative);
        if path.is_dir() {
            rust_files(dir, &relative, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(relative);
        }
    }
}

/// Every crate root of the workspace's members with modules of its own: the library, the
/// `tests/it` binary and multi-file benches. `src/main.rs` is a root without modules.
fn workspace_crates() -> Vec<CrateSource> {
    let mut crates = Vec::new();
    for member in ["proto", "sender", "receiver", "sim", "testkit", "report"] {
        let dir = root().join(member);
        let mut roots = vec![(format!("{member} (lib)"), dir.join("src"), "lib.rs")];
        roots.push((
            format!("{member} (tests/it)"),
            dir.join("tests/it"),
            "main.rs",
        ));
        if let Ok(benches) = std::fs::read_dir(dir.join("benches")) {
            for bench in benches.flatten().filter(|e| e.path().is_dir()) {
                let name = format!("{member} (bench {})", bench.file_name().to_string_lossy());
                roots.push((name, bench.path(), "main.rs"));
            }
        }
        for (name, dir, root_file) in roots {
            if !dir.join(root_file).is_file() {
                continue;
            }
            let mut paths = Vec::new();
            rust_files(&dir, Path::new(""), &mut paths);
            let files = paths
                .into_iter()
                // The library's binary: a root of its own, with no modules.
                .filter(|p| !(root_file == "lib.rs" && p == Path::new("main.rs")))
                .map(|p| {
                    let text = std::fs::read_to_string(dir.join(&p)).expect("read source");
                    (p, text)
                })
                .collect();
            crates.push(CrateSource { name, files });
        }
    }
    crates
}

/// The module a file defines: `a/b.rs` and `a/b/mod.rs` are `a::b`; the root file is `[]`.
fn module_of(file: &Path) -> ModPath {
    let mut parts: ModPath = file
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// `text` without `//` and `/* */` comments (doc links name paths that are no dependency)
/// and without string literals (which could hold `crate::` in a message).
fn strip_comments_and_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
                out.push(' ');
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal ('"', '{') must not open a string or a group; a lifetime
            // ('a) is left alone.
            '\'' => {
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        // '\n', '\'', '\\', '\u{..}': up to the closing quote.
                        chars.next();
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                        out.push_str("' '");
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                        out.push_str("' '");
                    }
                    _ => out.push('\''),
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The paths a `use` tree names, e.g. `crate::{a::{b, c as d}, e::*}` gives `crate::a::b`,
/// `crate::a::c`, `crate::e::*`; `self` in a group is the group's prefix.
fn expand_use_tree(tree: &str) -> Vec<Vec<String>> {
    fn split_top(group: &str) -> Vec<&str> {
        let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&group[start..]);
        parts
    }
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let tree = tree.trim().trim_start_matches("::");
    if tree.is_empty() {
        return Vec::new();
    }
    if let Some(open) = tree.find('{') {
        let prefix: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let Some(close) = tree.rfind('}') else {
            return Vec::new();
        };
        let mut paths = Vec::new();
        for part in split_top(&tree[open + 1..close]) {
            if part.trim() == "self" {
                paths.push(prefix.clone());
                continue;
            }
            for tail in expand_use_tree(part) {
                let mut path = prefix.clone();
                path.extend(tail);
                paths.push(path);
            }
        }
        return paths;
    }
    let path = tree.split(" as ").next().unwrap_or(tree);
    vec![
        path.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    ]
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Each `use` statement's tree in `code` (comments and strings stripped) and whether it is a
/// re-export (`pub use`, `pub(crate) use`), and the code with those statements removed.
fn take_use_statements(code: &str) -> (Vec<(String, bool)>, String) {
    let (mut trees, mut rest) = (Vec::new(), String::with_capacity(code.len()));
    let mut at = 0;
    while let Some(found) = code[at..].find("use ") {
        let start = at + found;
        let word_start = start == 0 || !code[..start].ends_with(is_ident_char);
        if !word_start {
            rest.push_str(&code[at..start + 4]);
            at = start + 4;
            continue;
        }
        let Some(end) = code[start..].find(';') else {
            break;
        };
        rest.push_str(&code[at..start]);
        let before = code[..start].trim_end();
        let public = before.ends_with("pub")
            || (before.ends_with(')')
                && before
                    .rsplit_once("pub(")
                    .is_some_and(|(_, r)| !r.contains(['\n', ';', '{'])));
        trees.push((code[start + 4..start + end].to_owned(), public));
        at = start + end + 1;
    }
    rest.push_str(&code[at..]);
    (trees, rest)
}

/// Paths in code that start at `crate`, `super` or `self`: `crate::a::B::new` gives
/// `[crate, a, B, new]`. `pub(in crate::x)` is a visibility, not a dependency.
fn code_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let starts_path = ["crate::", "super::", "self::"]
            .iter()
            .any(|p| code[i..].starts_with(p))
            && (i == 0 || !is_ident_char(bytes[i - 1] as char))
            && !code[..i]
                .trim_end()
                .strip_suffix("in")
                .is_some_and(|b| b.trim_end().ends_with('('));
        if !starts_path {
            i += code[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let mut path = Vec::new();
        let mut j = i;
        loop {
            let len = code[j..]
                .find(|c: char| !is_ident_char(c))
                .unwrap_or(code.len() - j);
            if len == 0 {
                break;
            }
            path.push(code[j..j + len].to_owned());
            j += len;
            if code[j..].starts_with("::") {
                j += 2;
            } else {
                break;
            }
        }
        paths.push(path);
        i = j.max(i + 1);
    }
    paths
}

/// The module graph of one crate: edges between sibling modules, each with the lines that
/// make it.
struct ModuleGraph {
    edges: BTreeMap<(ModPath, ModPath), BTreeSet<String>>,
}

fn build_graph(files: &[(PathBuf, String)]) -> ModuleGraph {
    let modules: BTreeSet<ModPath> = files.iter().map(|(p, _)| module_of(p)).collect();
    // `pub use x::Y` in a module re-exports: `crate::Y` then means `crate::x::Y`.
    let mut reexports: BTreeMap<(ModPath, String), Vec<String>> = BTreeMap::new();
    let mut references: Vec<(ModPath, PathBuf, Vec<String>, String)> = Vec::new();
    for (file, text) in files {
        let module = module_of(file);
        let code = strip_comments_and_strings(text);
        let (trees, rest) = take_use_statements(&code);
        for (tree, public) in &trees {
            for path in expand_use_tree(tree) {
                let shown = format!("use {}", path.join("::"));
                if *public && let Some(name) = path.last().filter(|n| n.as_str() != "*") {
                    let absolute = absolute(&module, &path, &modules);
                    if let Some(absolute) = absolute {
                        reexports.insert((module.clone(), name.clone()), absolute);
                    }
                }
                references.push((module.clone(), file.clone(), path, shown));
            }
        }
        for path in code_paths(&rest) {
            let shown = path.join("::");
            references.push((module.clone(), file.clone(), path, shown));
        }
    }
    let mut edges: BTreeMap<(ModPath, ModPath), BTreeSet<String>> = BTreeMap::new();
    for (from, file, path, shown) in references {
        let Some(absolute) = absolute(&from, &path, &modules) else {
            continue;
        };
        let to = resolve(&absolute, &modules, &reexports);
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        // A module and its own ancestor or descendant: declaring and re-exporting, no cycle.
        if common == from.len() || common == to.len() {
            continue;
        }
        let a = from[..=common].to_vec();
        let b = to[..=common].to_vec();
        edges
            .entry((a, b))
            .or_default()
            .insert(format!("{}: {shown}", file.display()));
    }
    ModuleGraph { edges }
}

/// `path` as seen from `module`, made absolute (without `crate`); `None` for another crate's.
fn absolute(module: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> Option<Vec<String>> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => Some(
            module
                .iter()
                .cloned()
                .chain(path[1..].iter().cloned())
                .collect(),
        ),
        "super" => {
            let mut base = module.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            Some(base.into_iter().chain(rest.iter().cloned()).collect())
        }
        // A child module named without `self::` (uniform paths).
        name => {
            let mut child = module.clone();
            child.push(name.to_owned());
            modules
                .contains(&child)
                .then(|| module.iter().cloned().chain(path.iter().cloned()).collect())
        }
    }
}

/// The module an absolute path lives in: its longest prefix that is a module, following
/// re-exports (a few hops at most).
fn resolve(
    path: &[String],
    modules: &BTreeSet<ModPath>,
    reexports: &BTreeMap<(ModPath, String), Vec<String>>,
) -> ModPath {
    let mut path = path.to_vec();
    for _ in 0..4 {
        let depth = (0..=path.len())
            .rev()
            .find(|&n| modules.contains(&path[..n].to_vec()))
            .unwrap_or(0);
        let module = path[..depth].to_vec();
        let Some(next) = path.get(depth) else {
            return module;
        };
        match reexports.get(&(module.clone(), next.clone())) {
            Some(target) if target != &path[..=depth] => {
                let mut redirected = target.clone();
                redirected.extend(path[depth + 1..].iter().cloned());
                path = redirected;
            }
            _ => return module,
        }
    }
    path
}

/// The groups of two or more modules that reach each other, each with the lines that tie it.
fn cycles(graph: &ModuleGraph) -> Vec<(Vec<ModPath>, Vec<String>)> {
    let mut next: BTreeMap<&ModPath, BTreeSet<&ModPath>> = BTreeMap::new();
    for (a, b) in graph.edges.keys() {
        next.entry(a).or_default().insert(b);
    }
    let reach = |from: &ModPath| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(m) = stack.pop() {
            for n in next.get(m).into_iter().flatten() {
                if seen.insert(*n) {
                    stack.push(n);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&ModPath, BTreeSet<&ModPath>> =
        next.keys().map(|m| (*m, reach(m))).collect();
    let mut groups: Vec<(Vec<ModPath>, Vec<String>)> = Vec::new();
    let mut placed = BTreeSet::new();
    for (m, reached) in &reaches {
        if placed.contains(m) || !reached.contains(m) {
            continue;
        }
        let group: BTreeSet<&ModPath> = reached
            .iter()
            .filter(|n| reaches.get(*n).is_some_and(|r| r.contains(m)))
            .copied()
            .collect();
        let why = graph
            .edges
            .iter()
            .filter(|((a, b), _)| group.contains(a) && group.contains(b))
            .map(|((a, b), lines)| {
                let lines: Vec<&str> = lines.iter().map(String::as_str).take(3).collect();
                format!(
                    "{} -> {} ({})",
                    a.join("::"),
                    b.join("::"),
                    lines.join("; ")
                )
            })
            .collect();
        placed.extend(group.iter().copied());
        groups.push((group.into_iter().cloned().collect(), why));
    }
    groups
}

fn source(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect()
}

#[test]
fn the_checker_finds_a_cycle_through_use_trees_code_paths_and_reexports() {
    // a -> b by a grouped use, b -> c by a path in code, c -> a through the root's re-export.
    let files = source(&[
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub use a::Thing;\n",
        ),
        (
            "a.rs",
            "use crate::{b::{self, Other}, c as see};\npub struct Thing;\n",
        ),
        ("b.rs", "fn f() { crate::c::g(); }\n"),
        (
            "c.rs",
            "// crate::b is a comment\nuse crate::Thing;\npub fn g() {}\n",
        ),
    ]);
    let found = cycles(&build_graph(&files));
    assert_eq!(found.len(), 1, "{found:?}");
    let (group, why) = &found[0];
    assert_eq!(group.len(), 3, "{why:?}");
    assert!(why.iter().any(|w| w.contains("c -> a")), "{why:?}");

    // Parent and child, a sibling used one way, a comment, a string: no cycle.
    let files = source(&[
        (
            "lib.rs",
            "pub mod store;\npub mod wire;\npub use store::Store;\n",
        ),
        (
            "store/mod.rs",
            "mod part;\npub use part::Part;\nuse crate::wire;\n",
        ),
        (
            "store/part.rs",
            "use super::Store;\nuse crate::store::Part;\n",
        ),
        (
            "wire.rs",
            "/// [`crate::store`]\nfn f() { let _ = \"crate::store\"; let _ = '\"'; }\n",
        ),
    ]);
    let found = cycles(&build_graph(&files));
    assert!(found.is_empty(), "{found:?}");

    // Siblings inside a directory module form a cycle too.
    let files = source(&[
        ("lib.rs", "pub mod store;\n"),
        ("store/mod.rs", "mod x;\nmod y;\n"),
        ("store/x.rs", "use super::y::Y;\npub struct X;\n"),
        (
            "store/y.rs",
            "fn f() -> super::x::X { todo!() }\npub struct Y;\n",
        ),
    ]);
    let found = cycles(&build_graph(&files));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].0,
        vec![
            vec!["store".to_owned(), "x".to_owned()],
            vec!["store".to_owned(), "y".to_owned()]
        ]
    );
}

#[test]
fn no_crate_has_a_module_cycle() {
    let crates = workspace_crates();
    assert!(
        crates.iter().any(|c| c.name == "sender (lib)"),
        "the sources were found"
    );
    let mut report = Vec::new();
    let mut edges = 0;
    for krate in &crates {
        let graph = build_graph(&krate.files);
        edges += graph.edges.len();
        for (group, why) in cycles(&graph) {
            let names: Vec<String> = group.iter().map(|m| m.join("::")).collect();
            report.push(format!(
                "{}: {} depend on each other:\n    {}",
                krate.name,
                names.join(", "),
                why.join("\n    ")
            ));
        }
    }
    println!(
        "FIGURE module graph: {} crate roots, {edges} edges between sibling modules, {} cycles",
        crates.len(),
        report.len()
    );
    assert!(report.is_empty(), "module cycles:\n{}", report.join("\n"));
}

#[test]
fn the_shipped_sender_does_not_link_the_simulator() {
    // What `cargo build --release -p kube-relay-sender` (the Dockerfile) links: the normal
    // dependencies with default features, no dev-dependencies.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--offline",
            "-p",
            "kube-relay-sender",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        tree.lines().any(|l| l.starts_with("kube-relay-proto ")),
        "the tree lists the sender's dependencies:\n{tree}"
    );
    for unwanted in ["kube-relay-sim ", "serde_yaml "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(unwanted)),
            "the sender links {unwanted}:\n{tree}"
        );
    }
}
