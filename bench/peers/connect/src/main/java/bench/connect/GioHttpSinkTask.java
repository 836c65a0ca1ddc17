package bench.connect;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Semaphore;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;

/**
 * One task: for each record, one POST per channel (keep-alive, at most gio.concurrency in flight),
 * signed with X-gio-signature. put() returns once every request of the batch got a 2xx, so the
 * framework commits only delivered records. No retries, rate limits, dead letters or attribute
 * look-ups: a best case for Connect.
 */
public class GioHttpSinkTask extends SinkTask {
  // The service's namespace, so delivery ids match its UUIDv5 of [channel, event id].
  private static final UUID NAMESPACE = UUID.fromString("6c1f3f2e-3f0e-5d8a-9a57-1d0f5b2c7e41");
  private static final HexFormat HEX = HexFormat.of();

  private record Channel(String name, URI uri, Mac mac) {}

  private final ObjectMapper json = new ObjectMapper();
  private final List<Channel> channels = new ArrayList<>();
  private HttpClient client;
  private Semaphore permits;
  private Duration timeout;
  private JsonNode template;

  @Override
  public String version() {
    return "0.1.0";
  }

  @Override
  public void start(Map<String, String> props) {
    AbstractConfig config = new AbstractConfig(GioHttpSinkConnector.CONFIG, props);
    List<String> names = config.getList("gio.channels");
    List<String> secrets = config.getList("gio.secrets");
    String base = config.getString("gio.base.url");
    try {
      for (int i = 0; i < names.size(); i++) {
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(secrets.get(i).getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        channels.add(new Channel(names.get(i), URI.create(base + "/hooks/" + names.get(i)), mac));
      }
      template = json.readTree(config.getString("gio.template"));
    } catch (Exception e) {
      throw new ConnectException("bad gio.* configuration", e);
    }
    permits = new Semaphore(config.getInt("gio.concurrency"));
    timeout = Duration.ofMillis(config.getInt("gio.timeout.ms"));
    client =
        HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(5))
            .build();
  }

  @Override
  public void put(Collection<SinkRecord> records) {
    List<CompletableFuture<HttpResponse<Void>>> inFlight = new ArrayList<>();
    for (SinkRecord record : records) {
      Object eventId = ((Map<?, ?>) record.value()).get("event_id");
      for (Channel channel : channels) {
        HttpRequest request = request(channel, String.valueOf(eventId));
        permits.acquireUninterruptibly();
        inFlight.add(
            client
                .sendAsync(request, HttpResponse.BodyHandlers.discarding())
                .whenComplete((response, error) -> permits.release()));
      }
    }
    for (CompletableFuture<HttpResponse<Void>> future : inFlight) {
      int status;
      try {
        status = future.join().statusCode();
      } catch (CompletionException e) {
        throw new RetriableException("request failed", e.getCause());
      }
      if (status / 100 != 2) {
        throw new RetriableException("HTTP " + status);
      }
    }
  }

  private HttpRequest request(Channel channel, String eventId) {
    ObjectNode body = json.createObjectNode();
    body.put("name", channel.name());
    body.set("templateParam", template);
    body.putArray("userAttr");
    body.put("timestamp", Long.toString(System.currentTimeMillis()));
    byte[] bytes;
    try {
      bytes = json.writeValueAsBytes(body);
    } catch (Exception e) {
      throw new ConnectException("cannot encode the body", e);
    }
    String signature = HEX.formatHex(channel.mac().doFinal(bytes));
    return HttpRequest.newBuilder(channel.uri())
        .timeout(timeout)
        .header("Content-Type", "application/json")
        .header("X-gio-signature", signature)
        .header("X-gio-delivery-id", deliveryId(channel.name(), eventId))
        .header("X-gio-attempt", "1")
        .POST(HttpRequest.BodyPublishers.ofByteArray(bytes))
        .build();
  }

  /** UUIDv5 (SHA-1) of the namespace and the JSON array [channel, event id]. */
  private String deliveryId(String channel, String eventId) {
    try {
      MessageDigest sha1 = MessageDigest.getInstance("SHA-1");
      ByteBuffer namespace = ByteBuffer.allocate(16);
      namespace.putLong(NAMESPACE.getMostSignificantBits()).putLong(NAMESPACE.getLeastSignificantBits());
      sha1.update(namespace.array());
      sha1.update(json.writeValueAsBytes(List.of(channel, eventId)));
      byte[] hash = sha1.digest();
      hash[6] = (byte) ((hash[6] & 0x0f) | 0x50);
      hash[8] = (byte) ((hash[8] & 0x3f) | 0x80);
      ByteBuffer bits = ByteBuffer.wrap(hash, 0, 16);
      return new UUID(bits.getLong(), bits.getLong()).toString();
    } catch (GeneralSecurityException | com.fasterxml.jackson.core.JsonProcessingException e) {
      throw new ConnectException("cannot derive the delivery id", e);
    }
  }

  @Override
  public void stop() {
    client = null;
  }
}
