//! Claims at boot: one, 32 at once, more instances than interfaces, a terminated instance's
//! interface, and the seed's way under the same concurrency.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use futures::future::join_all;
use serde_json::Value;

use crate::cloud::*;

#[tokio::test]
async fn one_claim_attaches_at_device_index_1_and_returns_the_tagged_hostname() {
    let cloud = Cloud::start().await;
    cloud
        .provision(&[&cloud.subnet_a, &cloud.subnet_c], 2)
        .await;
    let vm = cloud.launch(&cloud.subnet_c, ZONE_C, 1).await.remove(0);

    let claimed = cloud.claim(&vm, &[]).await.json();
    let hostname = claimed["hostname"].as_str().unwrap();
    assert!(
        ["waf-2", "waf-4"].contains(&hostname),
        "a zone-c interface: {claimed}"
    );
    assert_eq!(claimed["zone"], ZONE_C);
    assert_eq!(claimed["attached_now"], true);
    let eni = claimed["eni"].as_str().unwrap().to_string();
    assert!(cloud.attached_to(&vm.id).await.contains(&(eni.clone(), 1)));

    // A second run (a reboot) keeps what the instance holds.
    let again = cloud.claim(&vm, &[]).await.json();
    assert_eq!(
        (again["eni"].as_str().unwrap(), &again["attached_now"]),
        (eni.as_str(), &Value::Bool(false))
    );
    let members = cloud.status().await;
    let held: Vec<&Value> = members
        .iter()
        .filter(|m| m["instance"] == vm.id.as_str())
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["status"], "in-use");

    // Release detaches it for a clean scale-in.
    let released = cloud
        .eni(&["release", "--pool", "waf"], Some(&vm))
        .await
        .json();
    assert_eq!(released["released"], eni.as_str());
    assert!(
        cloud
            .attached_to(&vm.id)
            .await
            .iter()
            .all(|(e, _)| *e != eni)
    );
}

fn distinct_enis(runs: &[Run]) -> BTreeSet<String> {
    runs.iter()
        .filter(|r| r.code == 0)
        .map(|r| r.json()["eni"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn thirty_two_instances_booting_at_once_get_thirty_two_interfaces() {
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], 32).await;
    let vms = cloud.launch(&cloud.subnet_a, ZONE_A, 32).await;

    let runs = claim_all(&cloud, &vms, &[]).await;
    for run in &runs {
        assert_eq!(run.code, 0, "every instance gets one: {}", run.stderr);
    }
    assert_eq!(distinct_enis(&runs).len(), 32, "no interface given twice");
    // The claims did race, and every race one lost (an attach EC2 refused as in use) was
    // retried: the clients report exactly the refusals the emulator made.
    let races: usize = runs
        .iter()
        .map(|r| r.stderr.matches("taken by another instance").count())
        .sum();
    assert_eq!(races, cloud.refused_attaches(), "each lost race is retried");
    assert!(races > 0, "32 boots at once raced for interfaces");
    eprintln!("plura-eni claim, 32 at once from 32: 32 succeeded, {races} lost races retried");
    for vm in &vms {
        let attached = cloud.attached_to(&vm.id).await;
        assert!(
            attached.iter().any(|(_, index)| *index == 1),
            "{}: {attached:?}",
            vm.id
        );
    }
}

#[tokio::test]
async fn a_pool_of_30_leaves_exactly_2_of_32_with_the_empty_pool_error() {
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], 30).await;
    let vms = cloud.launch(&cloud.subnet_a, ZONE_A, 32).await;

    let runs = claim_all(&cloud, &vms, &["--patience", "10s"]).await;
    let empty: Vec<&Run> = runs.iter().filter(|r| r.code == EMPTY_POOL_EXIT).collect();
    assert_eq!(
        empty.len(),
        2,
        "exactly the two extra instances are refused"
    );
    assert_eq!(runs.iter().filter(|r| r.code == 0).count(), 30);
    assert_eq!(distinct_enis(&runs).len(), 30);
    for run in empty {
        let last = run.stderr.lines().last().unwrap();
        assert_eq!(
            last,
            "plura-eni: pool \"waf\" has no available interface in ap-northeast-2a: 30 of 30 in \
             use (raise the pool size or lower the group's maximum)"
        );
        assert!(run.stdout.is_empty(), "no identity is printed");
    }

    // A zone without a pool is as clear.
    let vm = cloud.launch(&cloud.subnet_c, ZONE_C, 1).await.remove(0);
    let run = cloud.claim(&vm, &[]).await;
    assert_eq!(run.code, EMPTY_POOL_EXIT);
    assert!(
        run.stderr
            .contains("in ap-northeast-2c: 0 of 0 in use (provision it"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_terminated_instances_interface_goes_to_the_next_one_with_the_same_ip_and_hostname() {
    // EC2 releases a terminated instance's interfaces a little later; so does this emulator.
    let cloud = Cloud::start_with(Some(Duration::from_secs(3))).await;
    cloud.provision(&[&cloud.subnet_a], 1).await;
    let old = cloud.launch(&cloud.subnet_a, ZONE_A, 1).await.remove(0);
    let before = cloud.claim(&old, &[]).await.json();

    cloud
        .ec2
        .terminate_instances()
        .instance_ids(&old.id)
        .send()
        .await
        .unwrap();
    let new = cloud.launch(&cloud.subnet_a, ZONE_A, 1).await.remove(0);
    let run = cloud.claim(&new, &[]).await;
    let after = run.json();
    assert!(
        run.stderr.contains("held by terminating instances"),
        "it waited: {}",
        run.stderr
    );
    assert_eq!(after["eni"], before["eni"]);
    assert_eq!(after["ip"], before["ip"], "the same fixed IP");
    assert_eq!(
        after["hostname"], before["hostname"],
        "the same hostname: the same agent"
    );
    assert!(
        cloud
            .attached_to(&new.id)
            .await
            .iter()
            .any(|(_, index)| *index == 1)
    );
}

/// The seed's user-data script, step by step: the first available interface with the
/// description in the zone, attached at index 1, no retry.
async fn seed_claim(
    ec2: &aws_sdk_ec2::Client,
    instance: &str,
    barrier: Option<&tokio::sync::Barrier>,
) -> bool {
    let described = ec2
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("description")
                .values("plura-waf")
                .build(),
        )
        .filters(
            Filter::builder()
                .name("availability-zone")
                .values(ZONE_A)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let first = described
        .network_interfaces()
        .iter()
        .find(|n| n.status().map(|s| s.as_str()) == Some("available"))
        .and_then(|n| n.network_interface_id())
        .map(str::to_string);
    if let Some(barrier) = barrier {
        barrier.wait().await;
    }
    let Some(first) = first else {
        return false;
    };
    ec2.attach_network_interface()
        .network_interface_id(first)
        .instance_id(instance)
        .device_index(1)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn the_seeds_way_loses_instances_under_the_same_concurrency() {
    let cloud = Cloud::start().await;
    cloud.provision(&[&cloud.subnet_a], 32).await;

    // As the boot scripts run, all at once.
    let vms = cloud.launch(&cloud.subnet_a, ZONE_A, 32).await;
    let won = join_all(vms.iter().map(|vm| seed_claim(&cloud.ec2, &vm.id, None))).await;
    let natural = won.iter().filter(|w| **w).count();

    // And with every instance reading the pool before any attaches, as when they boot in the
    // same second: the seed's script gives the same interface to all of them.
    let vms = cloud.launch(&cloud.subnet_a, ZONE_A, 32).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let won = join_all(
        vms.iter()
            .map(|vm| seed_claim(&cloud.ec2, &vm.id, Some(&barrier))),
    )
    .await;
    let together = won.iter().filter(|w| **w).count();
    eprintln!(
        "the seed's script, 32 at once from 32: {natural} succeeded as they came, \
         {together} when all read before attaching"
    );
    assert_eq!(
        together, 1,
        "one winner, every other instance keeps a fresh address"
    );
}
