package vmbackend

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestShareDirGuestLinks plays a hostile guest that prepares symlinks to a
// host directory in the shared directory where the host will create a
// container's directory, its rootfs mount point and its config.json: the
// host must create, mount and write only inside the shared directory.
func TestShareDirGuestLinks(t *testing.T) {
	base := t.TempDir()
	shared, host := filepath.Join(base, "shared"), filepath.Join(base, "host")
	for _, d := range []string{shared, host} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hostUntouched := func() {
		t.Helper()
		if entries, _ := os.ReadDir(host); len(entries) != 0 {
			t.Fatalf("the host directory got %d entries", len(entries))
		}
	}

	// <id> is a guest-made link to the host directory.
	if err := os.Symlink(host, filepath.Join(shared, "c1")); err != nil {
		t.Fatal(err)
	}
	d, err := makeShareDir(context.Background(), shared, "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if fi, err := os.Lstat(filepath.Join(shared, "c1")); err != nil || !fi.IsDir() {
		t.Fatalf("shared/c1 is not a fresh directory: %v, %v", fi, err)
	}
	hostUntouched()

	// rootfs and config.json are guest-made links.
	for _, n := range []string{"rootfs", "config.json"} {
		if err := os.Symlink(filepath.Join(host, n), filepath.Join(shared, "c1", n)); err != nil {
			t.Fatal(err)
		}
	}
	if fd, err := mountPoint(d, "rootfs"); !errors.Is(err, unix.EEXIST) {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("mountPoint over a guest link = %v, want EEXIST", err)
	}
	if err := writeNew(d, "config.json", []byte("{}")); !errors.Is(err, unix.EEXIST) {
		t.Errorf("writeNew over a guest link = %v, want EEXIST", err)
	}
	hostUntouched()

	// The normal case: a mount point and a file inside the share.
	os.Remove(filepath.Join(shared, "c1", "rootfs"))
	os.Remove(filepath.Join(shared, "c1", "config.json"))
	fd, err := mountPoint(d, "rootfs")
	if err != nil {
		t.Fatal(err)
	}
	var st, want unix.Stat_t
	unix.Fstat(fd, &st)
	unix.Close(fd)
	unix.Stat(filepath.Join(shared, "c1", "rootfs"), &want)
	if st.Ino != want.Ino {
		t.Errorf("mountPoint fd is inode %d, shared/c1/rootfs is %d", st.Ino, want.Ino)
	}
	if err := writeNew(d, "config.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(shared, "c1", "config.json")); string(b) != "{}" {
		t.Errorf("config.json = %q", b)
	}
	hostUntouched()
}

func TestOpenBundleDir(t *testing.T) {
	bundle := t.TempDir()
	outside := t.TempDir()
	os.Mkdir(filepath.Join(bundle, "rootfs"), 0o755)
	os.WriteFile(filepath.Join(bundle, "file"), nil, 0o644)
	os.Symlink(outside, filepath.Join(bundle, "out"))
	tests := []struct {
		path  string
		errno unix.Errno
	}{
		{"rootfs", 0},
		{bundle, 0},
		{"file", unix.ENOTDIR},
		{"out", unix.ENOENT}, // resolved inside the bundle, where it does not exist
		{"missing", unix.ENOENT},
	}
	for _, tc := range tests {
		fd, err := openBundleDir(bundle, tc.path)
		if err == nil {
			unix.Close(fd)
		}
		var got unix.Errno
		errors.As(err, &got)
		if got != tc.errno || (err != nil) != (tc.errno != 0) {
			t.Errorf("openBundleDir(%q) = %v, want errno %v", tc.path, err, tc.errno)
		}
	}
}
