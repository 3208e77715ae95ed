package images

import "testing"

func TestIsLoopbackHost(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"localhost:5000", true},
		{"127.0.0.1:5000", true},
		{"[::1]:5000", true},
		{"::1", true},
		{"127.0.0.2", true},
		{"10.0.0.1:5000", false},
		{"registry-1.docker.io", false},
		{"localhost.example.com", false},
	}
	for _, tc := range tests {
		if got := isLoopbackHost(tc.host); got != tc.want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestCleanEntry(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "a/b", want: "a/b"},
		{in: "./a/../b", want: "b"},
		{in: "/abs/file", want: "abs/file"},
		{in: "./", want: ""},
		{in: "../x", bad: true},
		{in: "a/../../x", bad: true},
		{in: "/../x", bad: true},
	}
	for _, tc := range tests {
		got, err := cleanEntry(tc.in)
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("cleanEntry(%q) = %q, %v", tc.in, got, err)
		}
	}
}
