package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Log formats of 'enroll run --log-format'.
const (
	logText = "text" // "enroll: <message>" lines, as the agent always wrote
	logJSON = "json" // one JSON object per line: time, level, msg, fields
)

// newLogger is the agent's logger for format, writing to w; nil for text,
// whose lines config.logf writes itself so they stay as they always were.
func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "", logText:
		return nil, nil
	case logJSON:
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})), nil
	}
	return nil, usageErr("--log-format %q is neither text nor json", format)
}

// event logs one agent event: with a JSON logger, msg at level with
// attrs (key, value pairs); in text, the line text.
func (c *config) event(level slog.Level, text, msg string, attrs ...any) {
	if c.Log == nil {
		fmt.Fprintf(c.Stderr, "enroll: %s\n", text)
		return
	}
	c.Log.Log(context.Background(), level, msg, attrs...)
}

// logJSONf is logf with a JSON logger: the message, at level warn when it
// says "warning:", else info.
func (c *config) logJSONf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if rest, ok := strings.CutPrefix(msg, "warning: "); ok {
		c.Log.Warn(rest)
		return
	}
	c.Log.Info(msg)
}
