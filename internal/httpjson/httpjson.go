// Package httpjson writes the admin API's JSON answers, for the API itself
// and for the services that mount endpoints on it, so every endpoint
// answers errors in one shape.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Write answers v as indented JSON with the status already set (200 when
// none was written).
func Write(w http.ResponseWriter, v any) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteStatus answers v as JSON with the given status code.
func WriteStatus(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	Write(w, v)
}

// Error answers {"error": message}. The message is the caller's and must
// never carry a secret.
func Error(w http.ResponseWriter, code int, err error) {
	WriteStatus(w, code, map[string]string{"error": err.Error()})
}
