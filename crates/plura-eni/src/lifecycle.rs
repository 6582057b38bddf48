//! Tells the Auto Scaling group how the launch went, through its lifecycle hook: CONTINUE once
//! the instance holds its pool interface, ABANDON when the pool had none (the group then
//! terminates the instance instead of running it with a fresh address).

use aws_sdk_autoscaling::Client;

use crate::error::{AwsContext, EniError};

pub async fn complete(
    asg: &Client,
    hook: &str,
    instance_id: &str,
    success: bool,
) -> Result<(), EniError> {
    let described = asg
        .describe_auto_scaling_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .doing("find the instance's group")?;
    let group = described
        .auto_scaling_instances()
        .first()
        .and_then(|i| i.auto_scaling_group_name())
        .ok_or_else(|| {
            EniError::Unexpected(format!("{instance_id} is in no Auto Scaling group"))
        })?;
    let result = if success { "CONTINUE" } else { "ABANDON" };
    asg.complete_lifecycle_action()
        .auto_scaling_group_name(group)
        .lifecycle_hook_name(hook)
        .instance_id(instance_id)
        .lifecycle_action_result(result)
        .send()
        .await
        .doing("complete the lifecycle action")?;
    tracing::info!("lifecycle hook {hook} of {group}: {result}");
    Ok(())
}
