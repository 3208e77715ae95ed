package images_test

import (
	"archive/tar"
	"bytes"
	"testing"
)

// rawEntry is a tar entry written as is (no cleaning), to build hostile layers.
type rawEntry struct {
	name     string
	data     []byte
	link     string
	symlink  bool
	hardlink bool
}

func rawTar(t *testing.T, entries ...rawEntry) []byte {
	t.Helper()
	return rawTarBytes(entries...)
}

func rawTarBytes(entries ...rawEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		switch {
		case e.symlink:
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
		case e.hardlink:
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, e.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if h.Size > 0 {
			tw.Write(e.data)
		}
	}
	tw.Close()
	return buf.Bytes()
}
