package config_test

import (
	"fmt"

	"github.com/kuasar-go/kuasar/sandboxer/config"
)

// ExampleParse overrides one key over the embedded defaults and shows that
// a misspelt key is refused with its name.
func ExampleParse() {
	c, err := config.Parse([]byte("[runtime_handlers.fast]\nisolation = \"vm\"\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	iso, hv := c.HandlerIsolation("fast")
	fmt.Printf("%s %q\n", iso, hv)
	_, err = config.Parse([]byte("[sandboxer]\nlisten_socket = \"/x.sock\"\n"))
	fmt.Println(err != nil)
	// Output:
	// vm ""
	// true
}
