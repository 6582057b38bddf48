//! Making the pool: provision (idempotent, adopting the seed's hand-made interfaces), status,
//! and the templates an operator deploys.

use std::collections::BTreeSet;

use serde_json::Value;
use tokio::process::Command;

use crate::cloud::*;

#[tokio::test]
async fn provision_is_idempotent_and_status_is_right() {
    let cloud = Cloud::start().await;
    let first = cloud
        .provision(&[&cloud.subnet_a, &cloud.subnet_c], 2)
        .await;
    assert_eq!(
        first.stdout.matches("created").count(),
        4,
        "{}",
        first.stdout
    );

    let again = cloud
        .provision(&[&cloud.subnet_a, &cloud.subnet_c], 2)
        .await;
    assert_eq!(
        again.stdout.matches("created").count(),
        0,
        "{}",
        again.stdout
    );
    assert_eq!(again.stdout.matches("kept").count(), 4, "{}", again.stdout);

    let members = cloud.status().await;
    assert_eq!(members.len(), 4);
    let in_zone = |zone: &str| -> BTreeSet<String> {
        members
            .iter()
            .filter(|m| m["zone"] == zone)
            .map(|m| m["hostname"].as_str().unwrap().to_string())
            .collect()
    };
    // Hostnames alternate zones, as in the seed's table.
    assert_eq!(
        in_zone(ZONE_A),
        BTreeSet::from(["waf-1".into(), "waf-3".into()])
    );
    assert_eq!(
        in_zone(ZONE_C),
        BTreeSet::from(["waf-2".into(), "waf-4".into()])
    );
    for m in &members {
        assert_eq!(m["status"], "available");
        assert_eq!(m["instance"], Value::Null);
        let ip = m["ip"].as_str().unwrap();
        let prefix = if m["zone"] == ZONE_A {
            "172.31.6"
        } else {
            "172.31.8"
        };
        assert!(
            ip.starts_with(prefix) || ip.starts_with("172.31.7") || ip.starts_with("172.31.9"),
            "{ip}"
        );
    }

    // Topping up adds only what is missing.
    let more = cloud
        .provision(&[&cloud.subnet_a, &cloud.subnet_c], 3)
        .await;
    assert_eq!(more.stdout.matches("created").count(), 2, "{}", more.stdout);
    assert_eq!(cloud.status().await.len(), 6);

    let table = cloud.eni(&["status", "--pool", "waf"], None).await;
    assert!(
        table
            .stdout
            .contains("ap-northeast-2a: 3 available, 0 in use"),
        "{}",
        table.stdout
    );

    // Pool health: the counts for node_exporter's textfile collector, and a warning threshold
    // with its own exit code naming the zones below it.
    let metrics = cloud
        .eni(&["status", "--pool", "waf", "--prometheus"], None)
        .await;
    assert_eq!(metrics.code, 0, "{}", metrics.stderr);
    for line in [
        "# TYPE plura_eni_pool_free gauge",
        "plura_eni_pool_free{pool=\"waf\",zone=\"ap-northeast-2a\"} 3",
        "plura_eni_pool_in_use{pool=\"waf\",zone=\"ap-northeast-2c\"} 0",
    ] {
        assert!(
            metrics.stdout.lines().any(|l| l == line),
            "{line}: {}",
            metrics.stdout
        );
    }
    let healthy = cloud
        .eni(&["status", "--pool", "waf", "--warn-below", "3"], None)
        .await;
    assert_eq!(healthy.code, 0, "{}", healthy.stderr);
    let low = cloud
        .eni(
            &[
                "status",
                "--pool",
                "waf",
                "--prometheus",
                "--warn-below",
                "4",
            ],
            None,
        )
        .await;
    assert_eq!(low.code, 5, "{}", low.stderr);
    assert!(
        low.stderr.contains(
            "pool \"waf\" is low: ap-northeast-2a has 3 free, ap-northeast-2c has 3 free \
             (fewer than 4 free)"
        ),
        "{}",
        low.stderr
    );
    assert!(
        low.stdout.contains("plura_eni_pool_free"),
        "the figures still print"
    );
    let empty = cloud
        .eni(&["status", "--pool", "none", "--warn-below", "1"], None)
        .await;
    assert_eq!(empty.code, 5);
    assert!(
        empty.stderr.contains("it has no interfaces at all"),
        "{}",
        empty.stderr
    );
}

#[tokio::test]
async fn provision_adopts_the_seeds_hand_made_interfaces() {
    let cloud = Cloud::start().await;
    let made = cloud
        .ec2
        .create_network_interface()
        .subnet_id(&cloud.subnet_a)
        .description("plura-waf")
        .send()
        .await
        .unwrap();
    let hand_made = made
        .network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_string();
    let run = cloud.provision(&[&cloud.subnet_a], 2).await;
    assert!(
        run.stdout.contains(&format!("adopted  {hand_made}")),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.matches("created").count(), 1, "{}", run.stdout);
    let members = cloud.status().await;
    assert_eq!(members.len(), 2);
    assert!(
        members
            .iter()
            .any(|m| m["eni"] == hand_made.as_str() && m["hostname"] == "waf-1")
    );
}

#[tokio::test]
async fn the_cloudformation_template_passes_cfn_lint_and_the_policy_is_scoped_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(BIN)
        .args(["cloudformation", "--pool", "waf", "--size", "2"])
        .args([
            "--subnet",
            "subnet-0a1b2c3d4e5f60718",
            "--subnet",
            "subnet-0c1b2c3d4e5f60718",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let template = dir.path().join("plura-eni.json");
    std::fs::write(&template, &run.stdout).unwrap();
    let cfn_lint = std::path::Path::new(&moto_python()).with_file_name("cfn-lint");
    let lint = Command::new(&cfn_lint)
        .arg(&template)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run ./scripts/test",
                cfn_lint.display()
            )
        });
    assert!(
        lint.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let policy = Command::new(BIN)
        .args(["policy", "--pool", "waf"])
        .output()
        .await
        .unwrap();
    let policy: Value = serde_json::from_slice(&policy.stdout).unwrap();
    let attach = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Resource"] == "arn:aws:ec2:*:*:network-interface/*")
        .expect("a statement for the interfaces");
    assert_eq!(
        attach["Condition"]["StringEquals"]["aws:ResourceTag/plura:pool"],
        "waf"
    );
    for statement in policy["Statement"].as_array().unwrap() {
        let actions = match &statement["Action"] {
            Value::Array(actions) => actions.clone(),
            action => vec![action.clone()],
        };
        for action in actions {
            assert!(
                !action.as_str().unwrap().contains('*'),
                "no wildcard action: {action}"
            );
        }
    }
}
