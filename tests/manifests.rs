//! The Helm chart and the kustomization must render. Both tools are installed by
//! `.ci/run`; outside CI a missing tool skips its test with a message.

use std::path::Path;
use std::process::Command;

fn tool_output(program: &str, args: &[&str]) -> Option<std::process::Output> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    match Command::new(program).args(args).current_dir(repo).output() {
        Ok(output) => Some(output),
        Err(error) => {
            let message = format!("{program} is not available ({error})");
            if std::env::var("CI").is_ok_and(|value| value == "true") {
                panic!("{message}: .ci/run installs it");
            }
            eprintln!("skipping: {message}");
            None
        }
    }
}

fn assert_success(output: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn helm_chart_lints() {
    let Some(output) = tool_output("helm", &["lint", "--strict", "charts/ishosting-operator"])
    else {
        return;
    };
    assert_success(&output, "helm lint");
}

#[test]
fn helm_chart_renders_deployment() {
    let Some(output) = tool_output("helm", &["template", "demo", "charts/ishosting-operator"])
    else {
        return;
    };
    let rendered = assert_success(&output, "helm template");
    assert!(rendered.contains("kind: Deployment"));
    assert!(rendered.contains("kind: ClusterRole"));
    assert!(rendered.contains("name: ISHOSTING_MAX_ORDERS_PER_HOUR\n              value: \"10\""));
    assert!(rendered.contains("name: ISHOSTING_MAX_SPEND_PER_DAY\n              value: \"1000\""));
}

#[test]
fn kustomization_renders_crd_and_rbac() {
    let Some(output) = tool_output("kubectl", &["kustomize", "deploy"]) else {
        return;
    };
    let rendered = assert_success(&output, "kubectl kustomize deploy");
    assert!(rendered.contains("kind: CustomResourceDefinition"));
    assert!(rendered.contains("ishostingvpses/status"));
    assert!(rendered.contains("kind: Deployment"));
    assert!(rendered.contains("ISHOSTING_MAX_ORDERS_PER_HOUR"));
    assert!(rendered.contains("ISHOSTING_MAX_SPEND_PER_DAY"));
}
