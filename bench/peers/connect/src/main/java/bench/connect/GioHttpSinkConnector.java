package bench.connect;

import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.Importance;
import org.apache.kafka.common.config.ConfigDef.Type;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.sink.SinkConnector;

/** POSTs every record, as a signed GrowingIO-style webhook, to each configured channel. */
public class GioHttpSinkConnector extends SinkConnector {
  static final ConfigDef CONFIG =
      new ConfigDef()
          .define("gio.base.url", Type.STRING, Importance.HIGH, "receiver base URL")
          .define("gio.channels", Type.LIST, Importance.HIGH, "channel names; POST <base>/hooks/<name>")
          .define("gio.secrets", Type.LIST, Importance.HIGH, "HMAC keys, in the order of gio.channels")
          .define("gio.template", Type.STRING, "{}", Importance.MEDIUM, "templateParam, as JSON")
          .define("gio.concurrency", Type.INT, 48, Importance.MEDIUM, "requests in flight per task")
          .define("gio.timeout.ms", Type.INT, 10000, Importance.MEDIUM, "per request");

  private Map<String, String> props;

  @Override
  public String version() {
    return "0.1.0";
  }

  @Override
  public void start(Map<String, String> props) {
    this.props = props;
  }

  @Override
  public Class<? extends Task> taskClass() {
    return GioHttpSinkTask.class;
  }

  @Override
  public List<Map<String, String>> taskConfigs(int maxTasks) {
    return Collections.nCopies(maxTasks, props);
  }

  @Override
  public void stop() {}

  @Override
  public ConfigDef config() {
    return CONFIG;
  }
}
