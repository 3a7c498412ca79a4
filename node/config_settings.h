// The settings of kvnode (node/config.h): each one's name, how its value is parsed into a
// NodeConfig, its current value and its help. Shared by the command-line and config-file parsers
// and --help (node/config.cc); not for use elsewhere.
#ifndef KV_NODE_CONFIG_SETTINGS_H_
#define KV_NODE_CONFIG_SETTINGS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "node/config.h"

namespace kv::config_internal {

// One setting. `apply` parses a value into the config; its error says only what is wrong with
// the value ("expected ..."), and the caller adds where the value came from.
struct Setting {
  absl::string_view name;
  absl::string_view value_name;  // shown in --help: --name=VALUE
  bool is_bool;
  absl::Status (*apply)(absl::string_view value, NodeConfig* config);
  std::string (*show)(const NodeConfig& config);  // the current value, for --help defaults
  absl::string_view help;
};

// Every setting, in --help order.
const std::vector<Setting>& Settings();
// Finds a setting by name; `-` and `_` are interchangeable. Null if there is none.
const Setting* FindSetting(absl::string_view name);

}  // namespace kv::config_internal

#endif  // KV_NODE_CONFIG_SETTINGS_H_
