//! The client-visible history (invoke / ok / fail / indeterminate), kept
//! when `record_history` is set, for external linearizability checkers.

use shoal_shard::message_batch::decode_batch;

use super::workload::metadata_request;
use super::*;

impl Cluster {
    /// After a client tick: a request just created is an invoke. (A retry
    /// keeps its invoke time, so `invoked_ns == now` only on the tick that
    /// invoked it.)
    pub(super) fn observe_invoke(&mut self, index: u32) {
        let client = &self.clients[index as usize];
        let Some(in_flight) = &client.in_flight else { return };
        if in_flight.invoked_ns != self.now_ns || in_flight.operation == Operation::Register {
            return;
        }
        let (id, group, request, payload) = (client.id, client.group, in_flight.request, in_flight.payload.clone());
        let operation = in_flight.operation;
        if operation == Operation::SendMessages {
            self.checkers[group].on_invoke(id, request, in_flight.messages.clone());
        }
        if self.config.record_history {
            let event = self.history_event(HistoryKind::Invoke, index, request, operation, &payload);
            self.history.push(HistoryEvent { invoke_ns: self.now_ns, ..event });
        }
    }

    /// What a client waits for, to tell afterwards how a reply ended it.
    pub(super) fn client_snapshot(&self, index: u32) -> ClientSnapshot {
        let client = &self.clients[index as usize];
        ClientSnapshot {
            in_flight: client.in_flight.as_ref().map(|f| (f.request, f.operation, f.payload.clone(), f.invoked_ns)),
            acks: self.checkers[client.group].acks().len(),
            metadata_applied: self.metadata_applied.len(),
        }
    }

    /// After a message reached a client: did it complete the request?
    pub(super) fn observe_completion(&mut self, index: u32, before: ClientSnapshot, eviction: bool) {
        let Some((request, operation, payload, invoked_ns)) = before.in_flight else { return };
        if operation == Operation::Register {
            return;
        }
        let client = &self.clients[index as usize];
        let group = client.group;
        let still_waiting = client.in_flight.as_ref().is_some_and(|f| f.request == request);
        let mut event = self.history_event(HistoryKind::Ok, index, request, operation, &payload);
        event.invoke_ns = invoked_ns;
        event.complete_ns = Some(self.now_ns);
        if eviction {
            // The session is gone: whether the request took effect is unknown.
            event.kind = HistoryKind::Indeterminate;
        } else if still_waiting {
            return;
        } else if operation == Operation::SendMessages {
            let acks = self.checkers[group].acks();
            if acks.len() == before.acks {
                return;
            }
            event.offset = acks.last().map(|ack| ack.offset);
        } else if self.metadata_applied.len() > before.metadata_applied {
            event.reply = Some("applied".to_string());
        } else {
            event.kind = HistoryKind::Fail;
            event.reply = Some("rejected".to_string());
        }
        self.history.push(event);
    }

    /// The run ended with these requests in flight: they may or may not have
    /// taken effect.
    pub(super) fn history_indeterminate_at_end(&mut self) {
        if !self.config.record_history {
            return;
        }
        for index in 0..self.clients.len() as u32 {
            let Some(in_flight) = &self.clients[index as usize].in_flight else { continue };
            if in_flight.operation == Operation::Register {
                continue;
            }
            let (request, operation, payload, invoked_ns) =
                (in_flight.request, in_flight.operation, in_flight.payload.clone(), in_flight.invoked_ns);
            let event = self.history_event(HistoryKind::Indeterminate, index, request, operation, &payload);
            self.history.push(HistoryEvent { invoke_ns: invoked_ns, ..event });
        }
    }

    pub(super) fn history_event(
        &self,
        kind: HistoryKind,
        index: u32,
        request: u64,
        operation: Operation,
        payload: &[u8],
    ) -> HistoryEvent {
        let client = &self.clients[index as usize];
        let mut messages = Vec::new();
        let (operation, payload) = if operation == Operation::SendMessages {
            let batch = decode_batch(payload).expect("a simulated client sends only valid batches");
            messages = batch.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
            ("append".to_string(), messages.join(" "))
        } else {
            (format!("{operation:?}").to_lowercase(), format!("{:?}", metadata_request(index, request)))
        };
        HistoryEvent {
            kind,
            client: u64::try_from(client.id).expect("simulated client ids are small"),
            request,
            group: client.group,
            namespace: self.namespaces[client.group],
            operation,
            payload,
            messages,
            offset: None,
            reply: None,
            invoke_ns: 0,
            complete_ns: None,
        }
    }
}
