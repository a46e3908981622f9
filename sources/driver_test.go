package sources

import "testing"

type fakeSettings struct{ Port int }

func (*fakeSettings) Validate(Config) error { return nil }

type otherSettings struct{}

func (*otherSettings) Validate(Config) error { return nil }

// fakeDriver has only NewSettings: SettingsOf calls nothing else.
type fakeDriver struct{ Driver }

func (fakeDriver) NewSettings() Settings { return &fakeSettings{Port: 7} }

func TestSettingsOf(t *testing.T) {
	var typedNil *fakeSettings
	for _, tc := range []struct {
		name string
		set  Settings
		want int
	}{
		{"nil is the defaults", nil, 7},
		{"a nil pointer is the defaults", typedNil, 7},
		{"own settings", &fakeSettings{Port: 9}, 9},
	} {
		got, err := SettingsOf[fakeSettings](Spec{Settings: tc.set}, "fake", fakeDriver{})
		if err != nil || got.Port != tc.want {
			t.Errorf("%s: got %+v, %v; want Port %d", tc.name, got, err, tc.want)
		}
	}

	own := &fakeSettings{Port: 9}
	got, _ := SettingsOf[fakeSettings](Spec{Settings: own}, "fake", fakeDriver{})
	got.Port = 1
	if own.Port != 9 {
		t.Error("SettingsOf returned the spec's own settings, not a copy")
	}

	_, err := SettingsOf[fakeSettings](Spec{Settings: &otherSettings{}}, "fake", fakeDriver{})
	const want = "a fake source was given the settings of another kind (*sources.otherSettings)"
	if err == nil || err.Error() != want {
		t.Errorf("another kind's settings: err %v, want %q", err, want)
	}
}
