//! Installing a snapshot: receiving the leader's file, replaying it into a new generation
//! of the state machine's tree and switching to it, and finishing at open an install that
//! a crash interrupted.

use std::sync::Arc;

use openraft::{ErrorSubject, ErrorVerb};

use super::StateMachine;
use crate::raft_types::{SnapshotMeta, StorageError};
use crate::store::keys::{self, KEY_GENERATION};
use crate::store::snapshot;
use crate::store::{StoreError, storage_error};

impl StateMachine {
    pub(super) async fn install(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: tokio::fs::File,
    ) -> Result<(), StorageError> {
        let snapshot_error = |e: StoreError| {
            storage_error(
                ErrorVerb::Write,
                ErrorSubject::Snapshot(Some(meta.signature())),
                &e,
            )
        };
        let _guard = self.generation_guard.clone().write_owned().await;
        let started = std::time::Instant::now();
        let header = snapshot::receive(
            self.realm.clone(),
            self.snapshot_dir.clone(),
            meta.clone(),
            snapshot,
        )
        .await
        .map_err(snapshot_error)?;
        let received = started.elapsed();
        if header.needs_history_after(self.history.last_seq()) {
            self.fill_history(meta, header.last_seq)
                .await
                .map_err(snapshot_error)?;
        }
        let filled = started.elapsed() - received;
        // The snapshot is on disk, whole, and the history holds every event it covers:
        // should this node crash from here on, `open` finishes the install from that file.
        // So the log may now be purged up to it, and openraft's core, waiting in that
        // purge, goes on while the snapshot loads.
        self.snapshot.received(meta.last_log_id);
        let ready = started.elapsed();
        self.replay_received(meta.clone())
            .await
            .map_err(snapshot_error)?;
        for path in self.receiving.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(
            snapshot = %meta.snapshot_id,
            last_seq = self.applied.last_seq,
            format = ?header.format,
            receive_ms = received.as_millis() as u64,
            history_ms = filled.as_millis() as u64,
            replay_ms = (started.elapsed() - ready).as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "installed snapshot"
        );
        Ok(())
    }

    /// Fetches the events after the history's last seq up to `upto` from a peer, appends
    /// them (each record checked) and syncs: a snapshot of live state covers events it
    /// does not carry, and the history must hold them before the state moves past them
    /// (Subscribe and dedupe read it).
    async fn fill_history(&self, meta: &SnapshotMeta, upto: u64) -> Result<(), StoreError> {
        let refuse = |detail: String| snapshot::refusal(meta, detail);
        let from = self.history.last_seq();
        let Some(source) = self.history_source.clone() else {
            return Err(refuse(format!(
                "it covers the events up to seq {upto}, this node's history ends at {from}, \
                 and there is no peer to fetch the events between from"
            )));
        };
        let started = std::time::Instant::now();
        // Each page is appended while the next is fetched.
        let mut appending: Option<tokio::task::JoinHandle<Result<usize, StoreError>>> = None;
        let mut asked = from;
        while asked < upto {
            let records = source
                .fetch(&meta.last_membership, asked, upto)
                .await
                .map_err(refuse)?;
            if let Some(previous) = appending.take() {
                join_append(previous).await?;
            }
            let first = crate::store::history::first_record_seq(&records).unwrap_or(asked + 1);
            if first > asked + 1 {
                // The peer's history begins past ours: retention deleted what lies between
                // once it was archived. Ours cannot be joined to it; begin where it does.
                tracing::warn!(
                    held = asked,
                    peer_begins = first,
                    "the peer's history begins past this node's: restarting this node's \
                     history there (the events between were archived and deleted)"
                );
                let history = self.history.clone();
                tokio::task::spawn_blocking(move || history.restart_at(first))
                    .await
                    .map_err(|e| {
                        StoreError::corrupt("history", format!("restart task failed: {e}"))
                    })??;
            }
            asked = crate::store::history::last_record_seq(&records).ok_or_else(|| {
                refuse(format!(
                    "a peer sent history records after seq {asked} that do not parse"
                ))
            })?;
            let history = self.history.clone();
            appending = Some(tokio::task::spawn_blocking(move || {
                history.append_records(&records)
            }));
        }
        if let Some(last) = appending.take() {
            join_append(last).await?;
        }
        let history = self.history.clone();
        tokio::task::spawn_blocking(move || history.sync())
            .await
            .map_err(|e| StoreError::corrupt("history", format!("sync task failed: {e}")))??;
        tracing::info!(
            from,
            upto,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fetched the history a snapshot covers from a peer"
        );
        Ok(())
    }

    /// Installs the received `installing.tmp` into a new generation, switches to it and
    /// makes the file the current snapshot.
    async fn replay_received(&mut self, meta: SnapshotMeta) -> Result<(), StoreError> {
        let generation = self.generation + 1;
        let installed = snapshot::install_received(
            self.disk.clone(),
            self.history.clone(),
            self.realm.clone(),
            self.snapshot_dir.clone(),
            generation,
            meta.clone(),
        )
        .await?;
        // A crash after the switch, before the file is promoted, is finished by `open`
        // (`Interrupted::Promote`).
        self.switch_to(generation, installed.tree, installed.applied)
            .await?;
        snapshot::promote_installed(&self.snapshot_dir)?;
        self.drop_generation(generation - 1)
    }

    /// Makes `generation` (filled, flushed) the live state machine, durably.
    async fn switch_to(
        &mut self,
        generation: u64,
        tree: crate::store::tree::Tree,
        applied: crate::store::Applied,
    ) -> Result<(), StoreError> {
        // Filled by the domain's rules, which index every record they close.
        tree.insert(keys::KEY_CLOSED_INDEXED, [])?;
        self.meta.insert(KEY_GENERATION, generation.to_be_bytes())?;
        // The switch must be durable before the old generation goes away.
        self.disk.flush().await?;
        self.generation = generation;
        self.tree = tree.clone();
        self.closed_floor = None;
        self.applied = applied;
        self.clock.observe(self.applied.hub_time_ms);
        match self.shared_tree.write() {
            Ok(mut shared) => *shared = tree,
            Err(poisoned) => *poisoned.into_inner() = tree,
        }
        // Subscribers cannot follow a jump: an empty batch tells them to read storage.
        let _ = self.feed.send(Arc::new(super::FeedBatch::default()));
        Ok(())
    }

    fn drop_generation(&self, generation: u64) -> Result<(), StoreError> {
        let old = keys::state_machine_tree(generation);
        self.disk.db().drop_tree(old.as_bytes())?;
        Ok(())
    }

    /// At open: a state machine durably ahead of its history (a power cut kept a flush of
    /// the tree but not the history's unsynced tail) is rebuilt from the current snapshot,
    /// or from nothing if there is none; openraft then re-applies the log entries after it
    /// (the log is never purged past the snapshot), which appends the missing events again.
    pub(super) async fn catch_up_history(&mut self) -> Result<(), StoreError> {
        let held = self.history.last_seq();
        if held >= self.applied.last_seq {
            return Ok(());
        }
        tracing::warn!(
            history_last_seq = held,
            applied_last_seq = self.applied.last_seq,
            "the state machine is ahead of the history files: rebuilding it from the \
             snapshot and the log"
        );
        self.rebuild_from_current_snapshot().await
    }

    /// At open: a state machine that came back behind the log's purge point (its file
    /// damaged and cut back to an earlier apply) cannot be brought forward by the log,
    /// whose entries up to that point are gone: it is rebuilt from the current snapshot,
    /// which covers them (the log is purged only behind a snapshot), and openraft applies
    /// the log after it. Without a snapshot that reaches the purge point, the start is
    /// refused by name.
    pub(in crate::store) async fn catch_up_purge_point(
        &mut self,
        purged: Option<crate::raft_types::LogId>,
    ) -> Result<(), StoreError> {
        if purged.is_none() || self.applied.last_applied >= purged {
            return Ok(());
        }
        tracing::warn!(
            applied = ?self.applied.last_applied,
            purged = ?purged,
            "the state machine is behind the log's purge point (its file was damaged): \
             rebuilding it from the current snapshot"
        );
        let covered = snapshot::current_last_log_id(&self.snapshot_dir)
            .ok()
            .flatten();
        if covered < purged {
            return Err(StoreError::corrupt(
                "state machine",
                format!(
                    "it applied the log up to {:?}, the log is purged up to {purged:?} and \
                     the snapshot covers {covered:?}: the state cannot be rebuilt here; \
                     wipe this data dir and add the node to its group again to rebuild it \
                     from its peers",
                    self.applied.last_applied
                ),
            ));
        }
        self.rebuild_from_current_snapshot().await
    }

    /// Replaces the state machine with the current snapshot's state (or an empty one when
    /// there is none); openraft then applies the log after it.
    async fn rebuild_from_current_snapshot(&mut self) -> Result<(), StoreError> {
        match snapshot::stage_current_for_replay(&self.snapshot_dir)? {
            Some(meta) => self.replay_received(meta).await,
            None => {
                let generation = self.generation + 1;
                let name = keys::state_machine_tree(generation);
                let db = self.disk.db().clone();
                db.drop_tree(name.as_bytes())?;
                let tree = db.open_tree(name.as_bytes())?;
                self.switch_to(generation, tree, crate::store::Applied::default())
                    .await?;
                self.drop_generation(generation - 1)
            }
        }
    }

    /// At open: finishes an install a crash interrupted (see `snapshot::Interrupted`).
    pub(super) async fn finish_interrupted_install(&mut self) -> Result<(), StoreError> {
        let history_last_seq = self.history.last_seq();
        match snapshot::interrupted_install(
            &self.snapshot_dir,
            self.applied.last_applied,
            history_last_seq,
        )? {
            snapshot::Interrupted::Nothing => {}
            snapshot::Interrupted::Promote => {
                tracing::info!(
                    "promoting a snapshot whose install was interrupted after its switch"
                );
                snapshot::promote_installed(&self.snapshot_dir)?;
            }
            snapshot::Interrupted::Replay(meta) => {
                tracing::info!(snapshot = %meta.snapshot_id, "finishing a snapshot install a crash interrupted");
                self.replay_received(meta).await?;
            }
        }
        Ok(())
    }
}

async fn join_append(
    task: tokio::task::JoinHandle<Result<usize, StoreError>>,
) -> Result<usize, StoreError> {
    task.await
        .map_err(|e| StoreError::corrupt("history", format!("append task failed: {e}")))?
}
