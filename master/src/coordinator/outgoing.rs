//! What a coordinator turn sends to workers once its changes are stored:
//! control messages, and units — several in one message to a worker that
//! reads them so (`unit_batches`), one by one to others.

use std::collections::HashMap;

use faena_proto::ids::WorkerId;
use faena_proto::mqtt::{Control, UnitBatch, WorkUnit};

use super::Sent;
use crate::mqtt::MqttOut;

/// A message for a worker, held until the changes before it are stored.
pub(super) enum Outgoing {
    /// A unit, and whether its worker reads several in one message.
    Unit(WorkerId, WorkUnit, bool),
    Control(WorkerId, Control),
}

/// Where a worker's messages go: the broker, or a test's record.
pub(super) trait Wire {
    /// One unit alone; whether it went out.
    fn unit(&self, worker: &WorkerId, unit: &WorkUnit) -> bool;
    /// A message of several units; whether it went out.
    fn units(&self, worker: &WorkerId, message: Vec<u8>, count: usize) -> bool;
    fn control(&self, worker: &WorkerId, control: &Control);
}

impl Wire for MqttOut {
    fn unit(&self, worker: &WorkerId, unit: &WorkUnit) -> bool {
        self.dispatch(worker, unit)
    }

    fn units(&self, worker: &WorkerId, message: Vec<u8>, count: usize) -> bool {
        self.dispatch_batch(worker, message, count)
    }

    fn control(&self, worker: &WorkerId, control: &Control) {
        MqttOut::control(self, worker, control);
    }
}

/// A batch-reading worker's units not yet sent.
#[derive(Default)]
struct Pending<'a> {
    batch: UnitBatch,
    units: Vec<&'a WorkUnit>,
}

/// Sends `outgoing` in its order for each worker (a worker's units waiting
/// in a batch go before a control message to it), when `stored` (its
/// changes committed); nothing otherwise. Which units went out, and which
/// did not (their jobs go back to the queue).
pub(super) fn send(outgoing: &[Outgoing], wire: &impl Wire, stored: bool) -> Sent {
    let mut sent = Sent::default();
    if !stored {
        sent.kept = outgoing
            .iter()
            .filter_map(|o| match o {
                Outgoing::Unit(_, unit, _) => Some((unit.job_id, unit.attempt)),
                Outgoing::Control(..) => None,
            })
            .collect();
        return sent;
    }
    let mut pending: HashMap<&WorkerId, Pending<'_>> = HashMap::new();
    for o in outgoing {
        match o {
            Outgoing::Unit(worker, unit, true) => {
                let json = UnitBatch::json(unit);
                let p = pending.entry(worker).or_default();
                if !p.batch.fits(&json) {
                    flush(worker, p, wire, &mut sent);
                }
                if p.batch.fits(&json) {
                    p.batch.push(&json);
                    p.units.push(unit);
                } else {
                    // Too large for any batch: alone, as to any worker.
                    record(&mut sent, unit, wire.unit(worker, unit));
                }
            }
            Outgoing::Unit(worker, unit, false) => record(&mut sent, unit, wire.unit(worker, unit)),
            Outgoing::Control(worker, control) => {
                if let Some(p) = pending.get_mut(worker) {
                    flush(worker, p, wire, &mut sent);
                }
                wire.control(worker, control);
            }
        }
    }
    for (worker, p) in &mut pending {
        flush(worker, p, wire, &mut sent);
    }
    sent
}

fn flush(worker: &WorkerId, p: &mut Pending<'_>, wire: &impl Wire, sent: &mut Sent) {
    if p.units.is_empty() {
        return;
    }
    let went = wire.units(worker, p.batch.take(), p.units.len());
    for unit in p.units.drain(..) {
        record(sent, unit, went);
    }
}

fn record(sent: &mut Sent, unit: &WorkUnit, went: bool) {
    let to = if went { &mut sent.out } else { &mut sent.kept };
    to.push((unit.job_id, unit.attempt));
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use faena_proto::ids::{FencingToken, JobId};
    use faena_proto::jobs::JobKind;
    use faena_proto::mqtt::{MAX_BATCH_UNITS, decode_units};
    use serde_json::json;

    use super::*;

    /// What went out, in order: a worker and the units of one message, or
    /// a control message's action.
    #[derive(Default)]
    struct Record {
        log: RefCell<Vec<(String, Vec<JobId>)>>,
        /// Messages of several units refused (the client's queue full).
        refuse_batches: bool,
    }

    impl Wire for Record {
        fn unit(&self, worker: &WorkerId, unit: &WorkUnit) -> bool {
            self.log.borrow_mut().push((worker.to_string(), vec![unit.job_id]));
            true
        }
        fn units(&self, worker: &WorkerId, message: Vec<u8>, count: usize) -> bool {
            let units = decode_units(&message).expect("a batch decodes");
            assert_eq!(units.len(), count);
            self.log.borrow_mut().push((format!("{worker} batch"), units.iter().map(|u| u.job_id).collect()));
            !self.refuse_batches
        }
        fn control(&self, worker: &WorkerId, _: &Control) {
            self.log.borrow_mut().push((format!("{worker} control"), vec![]));
        }
    }

    fn unit(n: usize) -> WorkUnit {
        WorkUnit::new(JobId::new(), 1, FencingToken::new(), JobKind::Noop, json!({"payload": n}))
    }

    fn w(id: &str) -> WorkerId {
        WorkerId::parse(id).expect("id")
    }

    #[test]
    fn a_batch_reader_gets_its_units_in_messages_before_its_control() {
        let units: Vec<WorkUnit> = (0..MAX_BATCH_UNITS + 3).map(unit).collect();
        let mut outgoing: Vec<Outgoing> = units.iter().map(|u| Outgoing::Unit(w("fast"), u.clone(), true)).collect();
        outgoing.insert(2, Outgoing::Unit(w("old"), unit(0), false));
        outgoing.push(Outgoing::Control(w("fast"), Control::Drain));
        outgoing.push(Outgoing::Unit(w("fast"), unit(0), true));
        let wire = Record::default();
        let sent = send(&outgoing, &wire, true);
        let log = wire.log.into_inner();
        let names: Vec<(&str, usize)> = log.iter().map(|(to, ids)| (to.as_str(), ids.len())).collect();
        assert_eq!(
            names,
            [("old", 1), ("fast batch", MAX_BATCH_UNITS), ("fast batch", 3), ("fast control", 0), ("fast batch", 1)],
            "a full batch goes at once; the rest before the control message; the last at the end"
        );
        let ids: Vec<JobId> =
            log.iter().filter(|(to, _)| to.starts_with("fast batch")).flat_map(|(_, i)| i.clone()).collect();
        assert_eq!(ids[..units.len()], units.iter().map(|u| u.job_id).collect::<Vec<_>>()[..], "in order");
        assert_eq!((sent.out.len(), sent.kept.len()), (MAX_BATCH_UNITS + 5, 0));
    }

    #[test]
    fn units_of_a_refused_or_unstored_message_stay_behind() {
        let outgoing: Vec<Outgoing> = (0..3).map(|n| Outgoing::Unit(w("fast"), unit(n), true)).collect();
        let refused = Record { refuse_batches: true, ..Default::default() };
        let sent = send(&outgoing, &refused, true);
        assert_eq!((sent.out.len(), sent.kept.len()), (0, 3));
        let wire = Record::default();
        let sent = send(&outgoing, &wire, false);
        assert_eq!((sent.out.len(), sent.kept.len()), (0, 3));
        assert!(wire.log.into_inner().is_empty(), "nothing goes out before its changes are stored");
    }

    #[test]
    fn a_unit_too_large_for_a_batch_goes_alone() {
        let big = WorkUnit { params: json!("x".repeat(faena_proto::mqtt::MAX_BATCH_BYTES)), ..unit(0) };
        let outgoing = [Outgoing::Unit(w("fast"), unit(1), true), Outgoing::Unit(w("fast"), big, true)];
        let wire = Record::default();
        let sent = send(&outgoing, &wire, true);
        let log = wire.log.into_inner();
        let names: Vec<&str> = log.iter().map(|(to, _)| to.as_str()).collect();
        assert_eq!(names, ["fast batch", "fast"], "the batch before it, then it alone");
        assert_eq!(sent.out.len(), 2);
    }
}
