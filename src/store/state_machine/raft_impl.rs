//! openraft's `RaftStateMachine` for `StateMachine`: each call hands over to the state
//! machine's methods or to `snapshot`, and turns a store failure into openraft's
//! `StorageError`.

use openraft::storage::RaftStateMachine;
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};

use super::StateMachine;
use crate::raft_types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use crate::raft_types::{Response, TypeConfig};
use crate::store::snapshot::{self, SnapshotBuilder};
use crate::store::{StoreError, storage_error};

fn sm_error(verb: ErrorVerb, err: &StoreError) -> StorageError {
    storage_error(verb, ErrorSubject::StateMachine, err)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((
            self.applied.last_applied,
            self.applied.last_membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries)
            .map_err(|e| sm_error(ErrorVerb::Write, &e))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let guard = self.generation_guard.clone().read_owned().await;
        // Copied here, between two applies, so that the snapshot is the state at
        // `applied` exactly, while the state machine goes on applying.
        let live = snapshot::copy_live_state(&self.tree);
        SnapshotBuilder::new(
            self.disk.clone(),
            self.snapshot.clone(),
            self.history.clone(),
            self.realm.clone(),
            self.applied.clone(),
            live,
            self.snapshot_dir.clone(),
            guard,
        )
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let (path, file) = snapshot::create_receiving_file(&self.snapshot_dir)
            .await
            .map_err(|e| sm_error(ErrorVerb::Write, &e))?;
        self.snapshot.installing();
        self.receiving.push(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        self.snapshot.installing();
        let installed = self.install(meta, *snapshot).await;
        if installed.is_err() {
            // A purge waiting for this install must not wait any longer.
            self.snapshot.install_failed();
        }
        installed
    }

    /// Checked whole before it is handed out: a damaged snapshot is rebuilt, never sent.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.repair_current_snapshot()
            .await
            .map_err(|e| sm_error(ErrorVerb::Read, &e))?;
        snapshot::open_current(&self.snapshot_dir)
            .await
            .map_err(|e| sm_error(ErrorVerb::Read, &e))
    }
}
