//! Private files: how `hsm-node` and `hsm-proxy` create what they write.
//!
//! Decides: every file either binary creates is mode 0600 and every
//! directory it creates 0700, from the moment it exists (the mode is given
//! to `open(2)`/`mkdir(2)`, so no window shows it wider, whatever the
//! umask allows). Directories that already exist are left as they are: the
//! operator chose them. Never: what goes in the files, or where they are.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file created.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory created.
pub const DIR_MODE: u32 = 0o700;

/// Open options whose `create`/`create_new` make the file 0600; the caller
/// adds what it does (`write`, `append`, `create_new`, …).
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates `dir` and its missing parents, each 0700.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Writes a file that must not exist yet (0600), and syncs it.
pub fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut f = options().write(true).create_new(true).open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Replaces `path` with `contents` whole: written to a 0600 temporary file
/// beside it, synced, then renamed over it (a reader sees the old file or
/// the new one, never a part; a file that was wider becomes 0600).
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // A temporary file left by a crash keeps its mode: make sure.
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Makes sure `path` exists as a 0600 file before a library that creates
/// files itself (redb) opens it; an existing file is not changed.
pub fn precreate(path: &Path) -> io::Result<()> {
    match options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens (creating 0600 if missing) a file to append to, e.g. a log.
pub fn append(path: &Path) -> io::Result<File> {
    options().create(true).append(true).open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn everything_made_here_is_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_dir_all(&d).unwrap();
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&d), 0o700);
        write_new(&d.join("new"), b"x").unwrap();
        assert_eq!(mode(&d.join("new")), 0o600);
        assert!(write_new(&d.join("new"), b"y").is_err(), "never overwrites");
        let wide = d.join("wide");
        fs::write(&wide, b"old").unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&wide, b"new").unwrap();
        assert_eq!(mode(&wide), 0o600);
        assert_eq!(fs::read(&wide).unwrap(), b"new");
        precreate(&d.join("db")).unwrap();
        assert_eq!(mode(&d.join("db")), 0o600);
        append(&d.join("log")).unwrap();
        assert_eq!(mode(&d.join("log")), 0o600);
    }
}
