//! The module layering of `src/lib.rs`, checked: every `crate::X` a module names must be a module
//! of a lower layer, so there is no import cycle and no arrow upward. A new module must be given
//! its layer here (the test fails until it is), which is the moment to decide where it belongs.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module and its layer: a module may name only modules of a lower layer.
/// Mirrors the layering in `src/lib.rs`'s module doc.
const LAYERS: &[(&str, u32)] = &[
    ("commands", 9),
    ("cli", 8),
    ("campaign", 8),
    ("pipeline", 7),
    ("sandbox", 7),
    ("report", 6),
    ("journal", 6),
    ("error", 6),
    ("delivery", 5),
    // The journal records where a resumed run starts reading a source (`source::resume`).
    ("source", 5),
    ("config", 4),
    ("alert", 3),
    ("job", 3),
    ("logging", 3),
    ("policy", 2),
    ("provider", 2),
    ("advert", 2),
    ("cost", 1),
    ("ledger", 1),
    ("recipient", 1),
    ("schedule", 1),
    ("template", 1),
    ("phone", 0),
    ("secret", 0),
    ("sms_length", 0),
    // The PostgreSQL state's connection and schema, shared by the journal and the ledger.
    ("state_db", 0),
    ("units", 0),
];

/// The top-level modules a source text names as `crate::X` or in a group `crate::{X, Y::{..}}`
/// (over several lines too), comments left out.
fn named_modules(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let identifier = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.push(identifier(rest));
            continue;
        };
        // The group's top-level items: each starts after `{` or a comma at depth 0.
        let mut depth = 0;
        let mut item_start = 0;
        for (index, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    names.push(identifier(&group[item_start..index]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(identifier(&group[item_start..index]));
                    item_start = index + 1;
                }
                _ => {}
            }
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_names_one_of_its_own_layer_or_above() {
    let layers: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut violations = Vec::new();
    for path in all {
        let relative = path.strip_prefix(&src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = layers.get(module.as_str()) else {
            violations.push(format!("{module}: no layer in tests/layering.rs"));
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for named in named_modules(&text) {
            if named == module {
                continue;
            }
            match layers.get(named.as_str()) {
                Some(&layer) if layer < own => {}
                Some(&layer) => violations.push(format!(
                    "{} (layer {own}) names crate::{named} (layer {layer})",
                    relative.display()
                )),
                None => violations.push(format!(
                    "{} names crate::{named}, which has no layer",
                    relative.display()
                )),
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_scanner_sees_paths_groups_and_skips_comments() {
    let text = "use crate::job::{A, B};\nuse crate::{units, phone::Phone};\n\
                // crate::commands in a comment\nlet x = crate::policy::f(); // crate::cli\n\
                use crate::{\n    delivery::{Router, Channel},\n    report::x,\n};";
    assert_eq!(
        named_modules(text),
        ["job", "units", "phone", "policy", "delivery", "report"]
    );
}
