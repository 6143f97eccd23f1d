//! The embedded store: redb, one file under the data directory, fsync on commit.
