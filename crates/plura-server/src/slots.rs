//! Long-lived requests (live streams) held to a number at once, in all and per credential, so
//! that one token cannot take what everyone else needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Slots {
    in_all: usize,
    per_credential: usize,
    taken: Mutex<(usize, HashMap<String, usize>)>,
}

/// One slot, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    credential: String,
}

impl Slots {
    pub fn new(in_all: usize, per_credential: usize) -> Self {
        Self {
            in_all,
            per_credential,
            taken: Mutex::default(),
        }
    }

    /// A slot for `credential`, or why there is none.
    pub fn take(self: &Arc<Self>, credential: &str) -> Result<Slot, &'static str> {
        let mut taken = self.taken.lock().unwrap();
        let (in_all, per_credential) = &mut *taken;
        if *in_all >= self.in_all {
            return Err("the server has as many open as it allows");
        }
        let mine = per_credential.entry(credential.to_string()).or_insert(0);
        if *mine >= self.per_credential {
            return Err("this credential has as many open as it may");
        }
        *mine += 1;
        *in_all += 1;
        Ok(Slot {
            slots: self.clone(),
            credential: credential.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap();
        let (in_all, per_credential) = &mut *taken;
        *in_all -= 1;
        if let Some(mine) = per_credential.get_mut(&self.credential) {
            *mine -= 1;
            if *mine == 0 {
                per_credential.remove(&self.credential);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_gets_its_share_and_all_together_no_more_than_the_total() {
        let slots = Arc::new(Slots::new(3, 2));
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        assert!(slots.take("a").is_err(), "a third for one credential");
        let _b1 = slots.take("b").unwrap();
        assert!(slots.take("c").is_err(), "past the total");
        drop(a1);
        assert!(slots.take("c").is_ok(), "a slot given back is free again");
    }
}
