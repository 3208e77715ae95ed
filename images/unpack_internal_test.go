package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tarEntry is one raw tar entry of a hostile layer.
type tarEntry struct {
	name, link string
	typ        byte
	data       string
	mode       int64
}

func tarOf(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Size: int64(len(e.data)), ModTime: time.Unix(1e9, 0)}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.data))
	}
	tw.Close()
	return b.Bytes()
}

// TestUnpackHostileEntries unpacks layers that try to write outside the
// rootfs; a sibling directory "outside" stands for the host. Nothing in it
// may change, and what lands inside the rootfs is checked.
func TestUnpackHostileEntries(t *testing.T) {
	tests := []struct {
		name    string
		layers  [][]tarEntry
		wantErr error
		inside  map[string]string // rootfs path -> content ("" = must not exist)
	}{
		{
			name:   "absolute symlink to / then a file through it",
			layers: [][]tarEntry{{{name: "esc", link: "/", typ: tar.TypeSymlink}, {name: "esc/etc/evil", data: "x"}}},
			inside: map[string]string{"etc/evil": "x"},
		},
		{
			name:   "absolute symlink climbing with .. then a file through it",
			layers: [][]tarEntry{{{name: "esc", link: "/../../outside", typ: tar.TypeSymlink}, {name: "esc/victim", data: "x"}}},
			inside: map[string]string{"outside/victim": "x"},
		},
		{
			name:    "relative symlink climbing out then a file through it",
			layers:  [][]tarEntry{{{name: "esc", link: "../outside", typ: tar.TypeSymlink}, {name: "esc/victim", data: "x"}}},
			wantErr: ErrUnsafePath,
		},
		{
			name:    "chained symlinks, the second climbing out",
			layers:  [][]tarEntry{{{name: "a", link: "b", typ: tar.TypeSymlink}, {name: "b", link: "../../outside", typ: tar.TypeSymlink}, {name: "a/victim", data: "x"}}},
			wantErr: ErrUnsafePath,
		},
		{
			name:   "a file replacing a symlink to outside is written in place, not through it",
			layers: [][]tarEntry{{{name: "f", link: "/../outside/victim", typ: tar.TypeSymlink}}, {{name: "f", data: "new"}}},
			inside: map[string]string{"f": "new"},
		},
		{
			name:    "hardlink to a symlink is refused",
			layers:  [][]tarEntry{{{name: "s", link: "/../outside/victim", typ: tar.TypeSymlink}, {name: "h", link: "s", typ: tar.TypeLink}}},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name:    "hardlink climbing out is refused",
			layers:  [][]tarEntry{{{name: "h", link: "../outside/victim", typ: tar.TypeLink}}},
			wantErr: ErrUnsafePath,
		},
		{
			name:   "whiteout through an absolute symlink stays inside",
			layers: [][]tarEntry{{{name: "d", link: "/../outside", typ: tar.TypeSymlink}}, {{name: "d/.wh.victim"}}},
			inside: map[string]string{"d/victim": ""},
		},
		{
			name: "opaque directory through an absolute symlink stays inside",
			layers: [][]tarEntry{{{name: "outside/", typ: tar.TypeDir}, {name: "outside/mine", data: "m"}, {name: "d", link: "/../outside", typ: tar.TypeSymlink}},
				{{name: "d/.wh..wh..opq"}}},
			inside: map[string]string{"outside/mine": ""},
		},
		{
			name:   "whiteout of a directory tree with a read-only directory",
			layers: [][]tarEntry{{{name: "t/", typ: tar.TypeDir, mode: 0o555}, {name: "t/u/v", data: "x"}}, {{name: ".wh.t"}}},
			inside: map[string]string{"t/u/v": ""},
		},
		{
			name:   "setuid bit survives, hardlink inside works",
			layers: [][]tarEntry{{{name: "bin/su", data: "su", mode: 0o4755}, {name: "bin/su2", link: "bin/su", typ: tar.TypeLink}}},
			inside: map[string]string{"bin/su": "su", "bin/su2": "su"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "rootfs")
			outside := filepath.Join(dir, "outside")
			os.Mkdir(root, 0o755)
			os.Mkdir(outside, 0o755)
			os.WriteFile(filepath.Join(outside, "victim"), []byte("host"), 0o644)
			var layers []Layer
			for _, l := range tc.layers {
				layers = append(layers, Layer{MediaType: ocispec.MediaTypeImageLayer, Data: tarOf(t, l...)})
			}
			img, err := BuildImage(ImageSpec{Config: ocispec.Image{}, Layers: layers})
			if err != nil {
				t.Fatal(err)
			}
			loaded, err := loadImage(context.Background(), img, img.Root)
			if err != nil {
				t.Fatal(err)
			}
			err = unpackLayers(context.Background(), img, loaded.Manifest.Layers, root, Limits{})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("err = %v, want %v", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("unpack: %v", err)
			}
			ents, _ := os.ReadDir(outside)
			if b, err := os.ReadFile(filepath.Join(outside, "victim")); len(ents) != 1 || err != nil || string(b) != "host" {
				t.Errorf("the directory outside the rootfs changed: %d entries, victim %q %v", len(ents), b, err)
			}
			for p, want := range tc.inside {
				b, err := os.ReadFile(filepath.Join(root, p))
				if want == "" {
					if err == nil {
						t.Errorf("%s exists in the rootfs, want it removed", p)
					}
					continue
				}
				if err != nil || string(b) != want {
					t.Errorf("%s in the rootfs = %q, %v; want %q", p, b, err, want)
				}
			}
			if tc.name == "setuid bit survives, hardlink inside works" {
				fi, err := os.Stat(filepath.Join(root, "bin/su"))
				if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 || !fi.ModTime().Equal(time.Unix(1e9, 0)) {
					t.Errorf("bin/su: %v %v", fi.Mode(), err)
				}
			}
		})
	}
}
