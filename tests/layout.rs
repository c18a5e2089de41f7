//! The crate layout the README states: roles (ingest, workers, indexer, queue, store,
//! loadgen) depend on no sluice crate but `sluice-core`, so each can run in front of, or
//! behind, the others' remote counterparts; only the binary wires concrete roles together.

use std::path::Path;

/// Role crates and the only sluice crate each may depend on (normal dependencies).
const ROLES: [&str; 6] = ["ingest", "workers", "indexer", "queue", "store", "loadgen"];
const ALLOWED: [&str; 1] = ["sluice-core"];

/// The names of the `sluice-*` crates in the `[dependencies]` section of a manifest.
fn sluice_dependencies(manifest: &str) -> Vec<String> {
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if !in_dependencies {
            continue;
        }
        let name = line
            .split(['=', '.', ' '])
            .next()
            .unwrap_or_default()
            .trim_matches('"');
        if name.starts_with("sluice-") {
            found.push(name.to_owned());
        }
    }
    found
}

#[test]
fn roles_depend_only_on_core() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for role in ROLES {
        let path = root.join(role).join("Cargo.toml");
        let manifest =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dependencies = sluice_dependencies(&manifest);
        assert!(
            dependencies.iter().any(|d| d == "sluice-core"),
            "{role}: the parse found no sluice-core dependency in {dependencies:?}"
        );
        let forbidden: Vec<&String> = dependencies
            .iter()
            .filter(|d| !ALLOWED.contains(&d.as_str()))
            .collect();
        assert!(
            forbidden.is_empty(),
            "{role} depends on {forbidden:?}: roles reach each other only through the ports \
             in sluice-core, wired by the binary"
        );
        checked += 1;
    }
    assert_eq!(checked, ROLES.len());
}

#[test]
fn the_parse_sees_dependencies_only_in_their_section() {
    let manifest =
        "[package]\nname = \"sluice-x\"\n\n[dependencies]\nsluice-core.workspace = true\n\
                    sluice-indexer = { workspace = true }\nserde.workspace = true\n\n\
                    [dev-dependencies]\nsluice-store.workspace = true\n";
    assert_eq!(
        sluice_dependencies(manifest),
        vec!["sluice-core".to_owned(), "sluice-indexer".to_owned()]
    );
}
