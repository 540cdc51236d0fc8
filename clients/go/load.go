package plugins

import (
	"context"
	"fmt"
	"plugin"
	"reflect"
)

// Load pulls key (Client.Pull), checks that the plugin can load into this
// host (CheckCompatible), and only then opens it and looks up the client's
// symbol (WithSymbol; "Plugin" by default), which must be of type T:
//
//   - a variable `var Plugin X` (Lookup gives *X): T is X, *X, or an
//     interface the value of Plugin implements;
//   - a function `func Plugin(...)`: T is its func type.
//
// So Load[sdk.Driver] works for `var Plugin sdk.Driver`, and so does
// Load[I] for a host-side interface I with the methods the host calls. The
// *Result says what was loaded and what vouched for it.
func Load[T any](ctx context.Context, c *Client, key Key, opts ...PullOption) (T, *Result, error) {
	var zero T
	res, err := c.Pull(ctx, key, opts...)
	if err != nil {
		return zero, nil, err
	}
	host, err := c.host()
	if err != nil {
		return zero, res, err
	}
	if err := checkCompatible(res.Path, host); err != nil {
		return zero, res, err
	}
	value, err := lookup[T](res.Path, c.symbol)
	if err != nil {
		return zero, res, err
	}
	return value, res, nil
}

// Open loads a plugin file already verified by other means: CheckCompatible,
// then plugin.Open, then the symbol as Load describes it. Go caches opened
// plugins by path, so opening one path again is cheap.
func Open[T any](path, symbol string) (T, error) {
	if err := CheckCompatible(path); err != nil {
		var zero T
		return zero, err
	}
	return lookup[T](path, symbol)
}

// lookup opens a plugin already checked and looks up its symbol as type T.
func lookup[T any](path, symbol string) (T, error) {
	var zero T
	p, err := plugin.Open(path)
	if err != nil {
		return zero, fmt.Errorf("plugins: open %s: %w", path, err)
	}
	sym, err := p.Lookup(symbol)
	if err != nil {
		return zero, &SymbolError{Path: path, Symbol: symbol, Want: typeName[T]()}
	}
	if value, ok := sym.(T); ok {
		return value, nil
	}
	if v := reflect.ValueOf(sym); v.Kind() == reflect.Pointer && !v.IsNil() {
		if value, ok := v.Elem().Interface().(T); ok {
			return value, nil
		}
	}
	return zero, &SymbolError{Path: path, Symbol: symbol, Want: typeName[T](), Got: fmt.Sprintf("%T", sym)}
}

func typeName[T any]() string {
	return reflect.TypeOf((*T)(nil)).Elem().String()
}
