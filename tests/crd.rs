//! The committed CRD files must equal what `ishosting-operator crd` prints; `make crd`
//! regenerates them.

use std::path::Path;

fn assert_committed(relative: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    assert!(
        committed == ishosting_operator::crd::crd_yaml(),
        "{relative} differs from the generated CRD: run `make crd` and commit the result"
    );
}

#[test]
fn crd_file_matches_generated() {
    assert_committed("crds/ishostingvps.yaml");
}

#[test]
fn chart_crd_matches_generated() {
    assert_committed("charts/ishosting-operator/crds/ishostingvps.yaml");
}

#[test]
fn crd_has_printer_columns_and_short_name() {
    let yaml = ishosting_operator::crd::crd_yaml();
    for column in [
        "Plan", "Location", "Phase", "Invoice", "Service", "IP", "Age",
    ] {
        assert!(
            yaml.contains(&format!("name: {column}\n")),
            "column {column}"
        );
    }
    assert!(yaml.contains("- isvps"));
    assert!(yaml.contains("x-kubernetes-list-type: map"));
}
