//! Where an embedded database (the SQLite inbox, the trace) is created: readable by the gateway's user only.
//! SQLite creates a database file as the umask allows (0644 under the usual 022) and gives its `-wal` and `-shm`
//! files the database's mode, so every local account could read every notification and trace. A new directory
//! is made 0700 and a new file 0600, as PostgreSQL does with its data directory; what exists already (an
//! operator's own choice) is left as it is.

use std::path::Path;

/// Make `path`'s missing directories (0700) and `path` itself, empty, if it does not exist (0600).
pub fn create_private(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_database_and_its_directory_are_readable_by_the_owner_only_and_an_existing_file_keeps_its_mode() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("data/inbox/herald.db");
        create_private(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&root.path().join("data")), 0o700);
        // SQLite gives the WAL the database's mode.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
        assert_eq!(mode(&path.with_extension("db-wal")), 0o600);
        drop(conn);

        let existing = root.path().join("shared.db");
        std::fs::write(&existing, b"").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
        create_private(&existing).unwrap();
        assert_eq!(mode(&existing), 0o640, "an operator's choice is kept");
    }
}
