//! What the operator pastes elsewhere: the launch template's user data, the instance role's
//! least-privilege policy, and a CloudFormation template for the whole setup.

use serde_json::{Value, json};

use crate::pool::{HOSTNAME_TAG, HostnameTemplate, POOL_TAG};

/// The user data of the launch template: (install the agent package,) claim, then start the
/// agent. No keys: the instance role gives the credentials.
pub fn user_data(
    pool: &str,
    lifecycle_hook: Option<&str>,
    agent_service: &str,
    install_agent: Option<&str>,
) -> String {
    let hook = lifecycle_hook
        .map(|h| format!(" --lifecycle-hook {}", shell_word(h)))
        .unwrap_or_default();
    let install = install_agent.map(install_step).unwrap_or_default();
    format!(
        r#"#!/bin/bash
# PLURA Fleet: take a fixed-IP interface (eth1) and its hostname from the pool {pool:?},
# then start the agent with that identity. Credentials come from the instance role.
set -euo pipefail
exec > >(tee -a /var/log/plura-eni.log | logger -t plura-eni) 2>&1
{install}
# Exit 3: the pool has no free interface in this zone. The instance must not run its agent with
# a fresh address (it would be a new entry in the agent list); the lifecycle hook abandons it.
/usr/bin/plura-eni claim --pool {pool_word}{hook}

# The agent labels itself with its Auto Scaling group from the instance's metadata tags; say so
# when the launch template has them off (InstanceMetadataTags=enabled turns them on).
token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token || true)
if ! curl -sf -o /dev/null -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/tags/instance; then
  echo "instance metadata tags are off: the agent cannot tell its Auto Scaling group; set InstanceMetadataTags=enabled in the launch template"
fi
systemctl restart {service}
"#,
        pool_word = shell_word(pool),
        service = shell_word(agent_service),
    )
}

/// Refuses a package source that could be swapped in transit: the package runs as root on every
/// instance, so it comes over TLS (https://, and curl is kept from following a redirect to
/// anything else) or from S3 with the instance role.
pub fn check_package_source(package: &str) -> Result<(), &'static str> {
    if package.starts_with("https://") || package.starts_with("s3://") {
        Ok(())
    } else {
        Err("give an https:// URL or an s3:// path (plain http could be swapped in transit)")
    }
}

/// The step that installs the agent package (which brings plura-eni) from an https URL or an S3
/// path, with the host's package manager. Its plura.conf comes from the image or configuration
/// management: user data holds no secrets.
fn install_step(package: &str) -> String {
    let source = shell_word(package);
    let fetch = if package.starts_with("s3://") {
        format!("aws s3 cp --only-show-errors {source} \"$pkg\"")
    } else {
        format!("curl --proto =https -fsSL --retry 5 -o \"$pkg\" {source}")
    };
    let kind = if package.ends_with(".rpm") {
        "rpm"
    } else {
        "deb"
    };
    format!(
        r#"
# Install the PLURA agent package (with plura-eni) unless the image has it.
if ! command -v plura-eni >/dev/null; then
  pkg=/tmp/plura-agent.{kind}
  {fetch}
  if command -v dnf >/dev/null; then dnf install -y "$pkg"
  elif command -v yum >/dev/null; then yum install -y "$pkg"
  else DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg"
  fi
  rm -f "$pkg"
fi
"#
    )
}

/// Quotes a word for bash when it needs it.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The instance role's policy: read the pool, attach and detach only the pool's interfaces,
/// finish the launch lifecycle action.
pub fn policy(pool: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadThePool",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeInstances",
                    "autoscaling:DescribeAutoScalingInstances"
                ],
                "Resource": "*"
            },
            {
                "Sid": "AttachOnlyPoolInterfaces",
                "Effect": "Allow",
                "Action": ["ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface"],
                "Resource": "arn:aws:ec2:*:*:network-interface/*",
                "Condition": {"StringEquals": {format!("aws:ResourceTag/{POOL_TAG}"): pool}}
            },
            {
                "Sid": "AttachToInstances",
                "Effect": "Allow",
                "Action": ["ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface"],
                "Resource": "arn:aws:ec2:*:*:instance/*"
            },
            {
                "Sid": "FinishLaunch",
                "Effect": "Allow",
                "Action": "autoscaling:CompleteLifecycleAction",
                "Resource": "*"
            }
        ]
    })
}

/// The watch's policy: it reads instances and groups, and writes nothing.
pub fn watch_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadInstancesAndGroups",
                "Effect": "Allow",
                "Action": ["ec2:DescribeInstances", "autoscaling:DescribeAutoScalingGroups"],
                "Resource": "*"
            }
        ]
    })
}

pub struct Stack<'a> {
    pub pool: &'a str,
    /// One subnet per zone, for the pool's interfaces and the group's instances.
    pub subnets: &'a [String],
    pub size: u32,
    pub hostnames: &'a HostnameTemplate,
    pub description: &'a str,
}

const HOOK: &str = "plura-eni-claim";

/// A CloudFormation template: the pool's interfaces, the instance role, the launch template
/// (whose user data claims from the pool) and the Auto Scaling group, sized to the pool.
pub fn cloudformation(stack: &Stack) -> Value {
    let mut resources = serde_json::Map::new();
    let mut n = 0;
    for round in 0..stack.size {
        for (z, subnet) in stack.subnets.iter().enumerate() {
            n += 1;
            let hostname = stack.hostnames.nth(n);
            resources.insert(
                format!("PoolInterface{}Zone{}", round + 1, z + 1),
                json!({
                    "Type": "AWS::EC2::NetworkInterface",
                    "Properties": {
                        "SubnetId": subnet,
                        "Description": stack.description,
                        "Tags": [
                            {"Key": POOL_TAG, "Value": stack.pool},
                            {"Key": HOSTNAME_TAG, "Value": hostname},
                            {"Key": "Name", "Value": hostname}
                        ]
                    }
                }),
            );
        }
    }
    let capacity = stack.size as usize * stack.subnets.len();
    resources.insert(
        "InstanceRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole"
                    }]
                },
                "Policies": [{"PolicyName": "plura-eni", "PolicyDocument": policy(stack.pool)}]
            }
        }),
    );
    resources.insert(
        "InstanceProfile".into(),
        json!({
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"Roles": [{"Ref": "InstanceRole"}]}
        }),
    );
    resources.insert(
        "LaunchTemplate".into(),
        json!({
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": {"Ref": "ImageId"},
                    "InstanceType": {"Ref": "InstanceType"},
                    "IamInstanceProfile": {"Arn": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}},
                    // Tags in the metadata: the agent reads its Auto Scaling group there.
                    "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
                    "UserData": {"Fn::Base64": user_data(stack.pool, Some(HOOK), "plura-agent", None)}
                }
            }
        }),
    );
    resources.insert(
        "Group".into(),
        json!({
            "Type": "AWS::AutoScaling::AutoScalingGroup",
            "Properties": {
                "MinSize": "0",
                "MaxSize": capacity.to_string(),
                "DesiredCapacity": {"Ref": "DesiredCapacity"},
                "VPCZoneIdentifier": stack.subnets,
                "LaunchTemplate": {
                    "LaunchTemplateId": {"Ref": "LaunchTemplate"},
                    "Version": {"Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"]}
                },
                "LifecycleHookSpecificationList": [{
                    "LifecycleHookName": HOOK,
                    "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                    "HeartbeatTimeout": 300,
                    "DefaultResult": "ABANDON"
                }]
            }
        }),
    );
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "PLURA Fleet: Auto Scaling group whose instances take fixed IPs and hostnames from \
             the pool {}",
            stack.pool
        ),
        "Parameters": {
            "ImageId": {
                "Type": "AWS::EC2::Image::Id",
                "Description": "An image with plura-agent and plura-eni installed"
            },
            "InstanceType": {"Type": "String", "Default": "t3.small"},
            "DesiredCapacity": {
                "Type": "Number",
                "Default": 0,
                "MinValue": 0,
                "MaxValue": capacity,
                "Description": "Instances to run; at most the pool's size"
            }
        },
        "Resources": resources,
        "Outputs": {
            "GroupName": {"Value": {"Ref": "Group"}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_claims_then_starts_the_agent_without_secrets() {
        let script = user_data("waf", Some("hook"), "plura-agent", None);
        assert!(script.starts_with("#!/bin/bash\n"));
        let claim = script
            .find("plura-eni claim --pool waf --lifecycle-hook hook")
            .unwrap();
        let start = script.find("systemctl restart plura-agent").unwrap();
        assert!(claim < start);
        assert!(script.contains("InstanceMetadataTags=enabled"));
        assert!(!script.to_lowercase().contains("secret"));
        assert!(!script.contains("AKIA"));
    }

    #[test]
    fn user_data_can_install_the_agent_package_first() {
        let script = user_data(
            "waf",
            None,
            "plura-agent",
            Some("s3://bucket/plura-agent.rpm"),
        );
        let install = script
            .find("aws s3 cp --only-show-errors s3://bucket/plura-agent.rpm \"$pkg\"")
            .unwrap();
        assert!(script.contains("pkg=/tmp/plura-agent.rpm"));
        assert!(install < script.find("plura-eni claim").unwrap());
        let script = user_data("waf", None, "plura-agent", Some("https://x.example/a.deb"));
        assert!(
            script.contains(
                "curl --proto =https -fsSL --retry 5 -o \"$pkg\" https://x.example/a.deb"
            )
        );
        assert!(!user_data("waf", None, "plura-agent", None).contains("pkg="));
    }

    #[test]
    fn a_package_comes_over_tls_or_from_s3_only() {
        assert!(check_package_source("https://x.example/a.deb").is_ok());
        assert!(check_package_source("s3://bucket/a.rpm").is_ok());
        for refused in [
            "http://x.example/a.deb",
            "ftp://x/a.deb",
            "/tmp/a.deb",
            "HTTP://x/a",
        ] {
            assert!(check_package_source(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn odd_words_are_quoted_for_bash() {
        assert_eq!(shell_word("waf-1"), "waf-1");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_template_sizes_the_group_to_the_pool() {
        let subnets = ["subnet-a".to_string(), "subnet-c".to_string()];
        let template = cloudformation(&Stack {
            pool: "waf",
            subnets: &subnets,
            size: 2,
            hostnames: &HostnameTemplate::new("waf-{n}".into()).unwrap(),
            description: "plura-waf",
        });
        let resources = template["Resources"].as_object().unwrap();
        let interfaces = resources
            .values()
            .filter(|r| r["Type"] == "AWS::EC2::NetworkInterface")
            .count();
        assert_eq!(interfaces, 4);
        let options =
            &resources["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"];
        assert_eq!(options["InstanceMetadataTags"], "enabled");
        assert_eq!(resources["Group"]["Properties"]["MaxSize"], "4");
        assert_eq!(
            resources["PoolInterface1Zone2"]["Properties"]["Tags"][1]["Value"], "waf-2",
            "hostnames alternate zones as in the seed"
        );
    }

    #[test]
    fn the_watch_reads_and_writes_nothing() {
        let policy = watch_policy();
        let actions: Vec<&str> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|statement| statement["Action"].as_array().unwrap())
            .map(|action| action.as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "ec2:DescribeInstances",
                "autoscaling:DescribeAutoScalingGroups"
            ]
        );
    }
}
