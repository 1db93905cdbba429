//! Where an audit device enabled through the API may write.
//!
//! A file device appends request paths, which any client controls, to a
//! file; if the API could name any file, a `PUT sys/audit/x` plus
//! `GET /v1/$(cmd)` would plant a shell command in a profile script (Vault's
//! HCSEC-2025-14, CVE-2025-6000). So the API can only create file devices
//! when the configuration lists directories for them
//! (`[audit] dangerous_allow_api_file_devices`), and then only:
//!
//! - at an absolute path without `.` or `..` components,
//! - whose directory, with every symlink resolved, is inside a listed
//!   directory (also resolved),
//! - as a new regular file or an existing audit log, never through a
//!   symlink, never a special file (checked when opening, see
//!   `palisade_audit::Trust::Api`).

use std::path::{Path, PathBuf};

use crate::logical::ApiError;

/// The path the device will write, with its directory resolved; or why not.
/// Errors never echo the path (it is a request value).
pub fn check_api_file_path(raw: &str, allowed: &[PathBuf]) -> Result<PathBuf, ApiError> {
    // no control or format characters: such a name forges log lines and
    // hides from anyone listing the directory
    if raw.chars().any(|c| !crate::canonical::is_printable(c)) {
        return Err(ApiError::bad_request(
            "file_path must not contain control or invisible characters",
        ));
    }
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(ApiError::bad_request("file_path must be an absolute path"));
    }
    // on the raw text: `Path::components` drops a `.` in the middle
    if raw.split('/').any(|c| c == "." || c == "..") || raw.ends_with('/') || raw.contains("//") {
        return Err(ApiError::bad_request(
            "file_path must name a file, without '.' or '..' components",
        ));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(ApiError::bad_request("file_path must name a file"));
    };
    let dir = dir.canonicalize().map_err(|_| {
        ApiError::bad_request("the directory of file_path does not exist or cannot be read")
    })?;
    let inside = allowed.iter().any(|a| match a.canonicalize() {
        Ok(a) => dir.starts_with(a),
        Err(_) => false,
    });
    if !inside {
        return Err(ApiError::bad_request(
            "file_path is outside the directories the server configuration allows for audit devices",
        ));
    }
    Ok(dir.join(name))
}

/// Whether `real` (an opened file's real path, every symlink resolved by
/// the kernel) lies inside one of the `allowed` directories. Checked after
/// opening: a directory on the way could have been swapped for a symlink
/// between [`check_api_file_path`] and the open.
pub fn inside_allowed(real: &Path, allowed: &[PathBuf]) -> bool {
    allowed
        .iter()
        .filter_map(|a| a.canonicalize().ok())
        .any(|a| real.starts_with(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inside_the_allowed_directories() {
        let base = tempfile::tempdir().unwrap();
        let allowed = base.path().join("audit");
        let other = base.path().join("home");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let dirs = vec![allowed.clone()];
        let ok = |p: &Path| check_api_file_path(p.to_str().unwrap(), &dirs);
        let real = allowed.canonicalize().unwrap();
        assert_eq!(ok(&allowed.join("a.log")).unwrap(), real.join("a.log"));
        assert_eq!(
            ok(&allowed.join("sub/b.log")).unwrap(),
            real.join("sub/b.log")
        );
        let outside = ApiError::bad_request(
            "file_path is outside the directories the server configuration allows for audit devices",
        );
        assert_eq!(ok(&other.join(".profile")).unwrap_err(), outside);
        assert_eq!(ok(Path::new("/etc/profile.d/x.sh")).unwrap_err(), outside);
        // a symlinked directory inside the allowed one that leads out of it
        std::os::unix::fs::symlink(&other, allowed.join("escape")).unwrap();
        assert_eq!(ok(&allowed.join("escape/.bashrc")).unwrap_err(), outside);
        for dots in ["../home/x", "./x.log", "sub/./x.log", "sub//x.log", "sub/"] {
            assert_eq!(
                check_api_file_path(&format!("{}/{dots}", allowed.display()), &dirs).unwrap_err(),
                ApiError::bad_request("file_path must name a file, without '.' or '..' components"),
                "{dots}"
            );
        }
        assert_eq!(
            check_api_file_path("relative.log", &dirs).unwrap_err(),
            ApiError::bad_request("file_path must be an absolute path")
        );
        assert_eq!(
            ok(&allowed.join("missing/x.log")).unwrap_err(),
            ApiError::bad_request("the directory of file_path does not exist or cannot be read")
        );
        // nothing allowed: nothing passes
        assert_eq!(
            check_api_file_path(allowed.join("a.log").to_str().unwrap(), &[]).unwrap_err(),
            outside
        );
    }
}
