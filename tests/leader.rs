//! End-to-end tests of leader election: two operator processes for one namespace, a real
//! kube-apiserver holding their Lease, and the provider simulator on loopback.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ishosting_operator::crd::Phase;
use ishosting_operator::simulator::Faults;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use rust_decimal_macros::dec;
use support::{TestEnv, walkthrough_spec};

const SECRET: &str = "ishosting-credentials";
/// Short lease timings, so that a takeover fits in a bounded test.
const LEASE_ARGS: &[&str] = &[
    "--lease-duration-seconds",
    "4",
    "--renew-deadline-seconds",
    "2",
    "--retry-period-seconds",
    "1",
];
const LEASE_DURATION: Duration = Duration::from_secs(4);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits until the Lease names a holder whose identity starts with `prefix`.
async fn wait_holder(env: &TestEnv, prefix: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(holder) = env.lease_holder().await
            && holder.starts_with(prefix)
        {
            return holder;
        }
        assert!(
            Instant::now() < deadline,
            "the lease did not pass to {prefix} within {timeout:?}; holder: {:?}",
            env.lease_holder().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn follower_finishes_order_after_leader_killed() {
    let Some(env) = TestEnv::start("leader-failover", dec!(500)).await else {
        return;
    };
    env.create_secret(SECRET, &env.api_key.clone()).await;
    let mut first = env.spawn_operator("operator-a", LEASE_ARGS);
    wait_holder(&env, "operator-a-", STARTUP_TIMEOUT).await;
    let second = env.spawn_operator("operator-b", LEASE_ARGS);
    assert!(
        second
            .wait_log("waiting to acquire the lease", STARTUP_TIMEOUT)
            .await,
        "the follower did not start: {}",
        second.log_tail()
    );
    assert!(
        first
            .metrics()
            .await
            .contains("ishosting_operator_leader 1")
    );
    assert!(
        second
            .metrics()
            .await
            .contains("ishosting_operator_leader 0")
    );

    // The simulator commits the order but keeps its response back, so the leader dies with
    // the order in flight.
    let mut drop_answers = BTreeMap::new();
    drop_answers.insert("order".to_string(), 1);
    env.admin
        .set_faults(&Faults {
            drop_answers,
            hold_answers_ms: 10_000,
            ..Faults::default()
        })
        .await
        .unwrap();
    let vps = env.create_vps("web-1", walkthrough_spec(SECRET)).await;
    let identity = format!("isvps-{}", vps.uid().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while env
        .admin
        .stats()
        .await
        .unwrap()
        .orders_by_identity
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the leader placed no order: {}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    let killed_at = Instant::now();
    env.admin.clear_faults().await.unwrap();

    // Only the leader reconciled: the follower never started its controller.
    assert!(
        !second.log().contains("controller started"),
        "the follower reconciled before it held the lease: {}",
        second.log_tail()
    );

    wait_holder(&env, "operator-b-", LEASE_DURATION * 3).await;
    let takeover = killed_at.elapsed();
    eprintln!("the follower took the lease {takeover:?} after the leader was killed");
    // The lease expires at most LEASE_DURATION after the kill. The follower then waits up to
    // 1 s before it takes the lease, and the rest is slack for a loaded machine.
    assert!(
        takeover <= LEASE_DURATION + Duration::from_secs(3),
        "takeover took {takeover:?}"
    );
    assert!(
        second
            .wait_log("controller started", Duration::from_secs(5))
            .await
    );
    assert!(
        second
            .metrics()
            .await
            .contains("ishosting_operator_leader 1")
    );

    env.wait_phase("web-1", Phase::Running, Duration::from_secs(30))
        .await;
    let stats = env.admin.stats().await.unwrap();
    assert_eq!(
        stats.orders_by_identity.get(&identity),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(
        stats.orders_by_identity.values().sum::<u32>(),
        1,
        "{stats:?}"
    );
    assert_eq!(
        stats.payments_by_identity.get(&identity),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(
        stats.payments_by_identity.values().sum::<u32>(),
        1,
        "{stats:?}"
    );
}

#[tokio::test]
async fn leader_exits_when_lease_taken() {
    let Some(env) = TestEnv::start("leader-lost", dec!(500)).await else {
        return;
    };
    let mut operator = env.spawn_operator("operator-a", LEASE_ARGS);
    wait_holder(&env, "operator-a-", STARTUP_TIMEOUT).await;
    assert!(
        operator
            .wait_log("controller started", STARTUP_TIMEOUT)
            .await
    );

    // Another replica writes itself into the Lease, as after a pause longer than the lease.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    let patch = serde_json::json!({"spec": {"holderIdentity": "intruder"}});
    leases
        .patch(
            "ishosting-operator",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();

    let status = operator
        .wait_exit(LEASE_DURATION * 2)
        .await
        .unwrap_or_else(|| panic!("the operator kept running: {}", operator.log_tail()));
    assert!(!status.success(), "exit status {status:?}");
    let log = operator.log();
    assert!(log.contains("lost the lease"), "{}", operator.log_tail());
    assert!(log.contains("intruder"), "{}", operator.log_tail());
}
