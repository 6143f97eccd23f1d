//! Operator commands the device has acted on, persisted beside the mutation queue: a
//! command id is recorded (in the same file the wipe empties) before its ack is sent, and
//! marked sent once a `CommandAck` went out on an open session. Unsent acks go after the
//! next `Welcome`; a command the server sends again (it does until it has the ack) is
//! recognised and only acknowledged again. The oldest sent records are dropped past
//! [`MAX_REMEMBERED_COMMANDS`].

use rusqlite::{OptionalExtension as _, params};

use super::{MutationQueue, Result};

/// Acted-on commands remembered: the server sends a command again only until it has the ack,
/// so only the last few can come back.
pub(crate) const MAX_REMEMBERED_COMMANDS: i64 = 256;

impl MutationQueue {
    /// Returns true when the device has already acted on `command_id`.
    pub(crate) fn command_handled(&self, command_id: &str) -> Result<bool> {
        let found: Option<i64> = self
            .connection
            .query_row("SELECT handled FROM command_acks WHERE command_id = ?1", params![command_id], |row| row.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    /// Records that the device acted on `command_id` (its ack not sent yet).
    pub(crate) fn record_command(&mut self, command_id: &str) -> Result<()> {
        let next: i64 =
            self.connection
                .query_row("SELECT COALESCE(MAX(handled), 0) + 1 FROM command_acks", [], |row| row.get(0))?;
        self.connection.execute(
            "INSERT OR IGNORE INTO command_acks (command_id, handled, sent) VALUES (?1, ?2, 0)",
            params![command_id, next],
        )?;
        Ok(())
    }

    /// Returns the acks not sent yet, oldest first.
    pub(crate) fn unsent_command_acks(&self) -> Result<Vec<String>> {
        let mut statement =
            self.connection.prepare("SELECT command_id FROM command_acks WHERE sent = 0 ORDER BY handled")?;
        let ids = statement.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }

    /// Records that the ack of `command_id` went out, and forgets the oldest sent ones past
    /// [`MAX_REMEMBERED_COMMANDS`].
    pub(crate) fn mark_command_ack_sent(&mut self, command_id: &str) -> Result<()> {
        let transaction = self.connection.transaction()?;
        transaction.execute("UPDATE command_acks SET sent = 1 WHERE command_id = ?1", params![command_id])?;
        transaction.execute(
            "DELETE FROM command_acks WHERE sent = 1 AND handled <= (SELECT MAX(handled) FROM command_acks) - ?1",
            params![MAX_REMEMBERED_COMMANDS],
        )?;
        transaction.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::DEFAULT_MAX_QUEUED_MUTATIONS;

    #[test]
    fn acted_on_commands_survive_a_restart_and_a_wipe_until_their_ack_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.sqlite");
        {
            let mut queue = MutationQueue::open(Some(&path), DEFAULT_MAX_QUEUED_MUTATIONS).unwrap();
            queue.record_command("lock-1").unwrap();
            queue.record_command("wipe-2").unwrap();
            queue.record_command("lock-1").unwrap();
            queue.clear().unwrap();
            queue.mark_command_ack_sent("lock-1").unwrap();
        }
        let queue = MutationQueue::open(Some(&path), DEFAULT_MAX_QUEUED_MUTATIONS).unwrap();
        assert_eq!(queue.unsent_command_acks().unwrap(), ["wipe-2"]);
        assert!(queue.command_handled("lock-1").unwrap(), "sent acks are still recognised");
        assert!(!queue.command_handled("other").unwrap());
    }

    #[test]
    fn only_the_last_sent_commands_are_remembered() {
        let mut queue = MutationQueue::open(None, DEFAULT_MAX_QUEUED_MUTATIONS).unwrap();
        for n in 0..MAX_REMEMBERED_COMMANDS + 10 {
            let id = format!("c{n}");
            queue.record_command(&id).unwrap();
            queue.mark_command_ack_sent(&id).unwrap();
        }
        assert!(!queue.command_handled("c0").unwrap());
        assert!(queue.command_handled(&format!("c{}", MAX_REMEMBERED_COMMANDS + 9)).unwrap());
        let remembered: i64 =
            queue.connection.query_row("SELECT COUNT(*) FROM command_acks", [], |row| row.get(0)).unwrap();
        assert!(remembered <= MAX_REMEMBERED_COMMANDS + 1);
    }
}
