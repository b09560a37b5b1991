# Renders a batch of BOSH job templates; driven by render/ruby.rs.
#
# Input (stdin, one JSON document):
#   {"max_output": N,
#    "jobs": [{"name": "hello", "templates": [["monit", "<erb>"], ["ctl.erb", "<erb>"], ...]}],
#    "requests": [{"spec": {...}, "jobs": [{"job": 0, "properties": {...}, "links": {...},
#                                           "release": {"name": .., "version": ..}}]}]}
# Output (stdout): one JSON line per request, in order:
#   {"jobs": [[<file>, ...], ...]}  where <file> is {"text": "..."} or {"bytes": [..]}
#   {"errors": [{"job": "hello", "template": "ctl.erb", "line": 3, "message": "..."}]}
#
# The template API is BOSH's (bosh-template's EvaluationContext): p, if_p,
# link, if_link, spec, properties, name, index; plus p? (a bosh-rs extension).
# Error messages carry no values: NameError messages are rebuilt from the
# method name and the receiver's class, never its inspect.

require 'erb'
require 'json'

module Bosh
  module Template
    class UnknownProperty < StandardError
      attr_reader :name

      def initialize(names, link = nil)
        @name = names
        super("Can't find property '#{names}'#{link ? " of link '#{link}'" : ''}")
      end
    end

    class UnknownLink < StandardError
      attr_reader :name

      def initialize(name)
        @name = name
        super("Can't find link '#{name}'")
      end
    end

    class OutputTooLarge < StandardError; end

    # YAML's .inf, -.inf and .nan have no JSON number, so the director holds
    # them as these strings (a reserved noncharacter, U+FDD0, then the YAML
    # spelling; bosh_api::yaml::non_finite). Templates get the Float Ruby
    # BOSH's YAML reader gives them.
    module NonFinite
      FLOATS = {
        "\u{FDD0}.inf" => Float::INFINITY,
        "\u{FDD0}-.inf" => -Float::INFINITY,
        "\u{FDD0}.nan" => Float::NAN
      }.freeze

      def self.decode(value)
        case value
        when Hash then value.transform_values { |v| decode(v) }
        when Array then value.map { |v| decode(v) }
        when String then FLOATS.fetch(value, value)
        else value
        end
      end
    end

    # Dotted-path lookup in nested hashes, as bosh-template's PropertyHelper.
    module PropertyHelper
      def lookup_property(collection, name)
        return nil if collection.nil?

        ref = collection
        name.split('.').each do |key|
          return nil unless ref.respond_to?(:[]) && !ref.is_a?(String) && !ref.is_a?(Array)

          ref = ref[key]
          return nil if ref.nil?
        end
        ref
      end

      def first_property(collection, args, link = nil)
        names = Array(args[0])
        names.each do |name|
          value = lookup_property(collection, name)
          return value unless value.nil?
        end
        return args[1] if args.length == 2

        raise UnknownProperty.new(names, link)
      end

      def if_property(collection, names)
        values = names.map do |name|
          value = lookup_property(collection, name)
          return ActiveElseBlock.new(self) if value.nil?

          value
        end
        yield(*values)
        InactiveElseBlock.new
      end
    end

    # What `if_p`/`if_link` return when they did not yield.
    class ActiveElseBlock
      def initialize(context)
        @context = context
      end

      def else
        yield
      end

      def else_if_p(*names, &block)
        @context.if_p(*names, &block)
      end

      def else_if_link(name, &block)
        @context.if_link(name, &block)
      end
    end

    # What `if_p`/`if_link` return when they yielded.
    class InactiveElseBlock
      def else; end

      def else_if_p(*_names)
        InactiveElseBlock.new
      end

      def else_if_link(_name)
        InactiveElseBlock.new
      end
    end

    # OpenStruct-like view of a hash: `spec.networks.default.ip`,
    # `spec.networks['default']`, unknown keys read as nil. Its inspect
    # never shows values.
    class SpecStruct
      def initialize(hash)
        @table = {}
        hash.each { |k, v| @table[k.to_sym] = v }
      end

      def [](key)
        @table[key.to_sym]
      end

      def []=(key, value)
        @table[key.to_sym] = value
      end

      def to_h
        @table.dup
      end

      def each_pair(&block)
        return @table.each_pair unless block

        @table.each_pair(&block)
        self
      end

      def marshal_dump
        @table
      end

      def dig(key, *rest)
        value = self[key]
        rest.empty? || value.nil? ? value : value.dig(*rest)
      end

      # BOSH's BackCompatOpenStruct: `methods(false)` lists the keys.
      def methods(regular = true)
        regular ? super : @table.keys
      end

      def respond_to_missing?(name, include_private = false)
        @table.key?(name.to_s.chomp('=').to_sym) || super
      end

      # Keys read as methods (nil when absent, as OpenStruct); `key=` sets.
      def method_missing(name, *args)
        n = name.to_s
        if n.end_with?('=') && args.length == 1
          @table[n.chomp('=').to_sym] = args[0]
        elsif args.empty?
          @table[name]
        else
          super
        end
      end

      def ==(other)
        other.is_a?(SpecStruct) && other.to_h == @table
      end

      def inspect
        '#<spec>'
      end
      alias to_s inspect

      def self.wrap(object)
        case object
        when Hash then new(object.transform_values { |v| wrap(v) })
        when Array then object.map { |v| wrap(v) }
        else object
        end
      end
    end

    # One instance of a link: `link('db').instances.first.address`.
    class EvaluationLinkInstance
      include PropertyHelper

      attr_reader :name, :index, :id, :az, :address, :properties, :bootstrap

      def initialize(spec)
        @name = spec['name']
        @index = spec['index']
        @id = spec['id']
        @az = spec['az']
        @address = spec['address']
        @properties = spec['properties']
        @bootstrap = spec['bootstrap']
      end

      def p(*args)
        first_property(@properties, args)
      end

      def if_p(*names, &block)
        if_property(@properties, names, &block)
      end

      def inspect
        "#<link instance #{@name}/#{@index}>"
      end
    end

    # A consumed link: its instances and the provider's properties.
    class EvaluationLink
      include PropertyHelper

      # The health filters of a BOSH DNS group query (the director's
      # DnsEncoder); `default` leaves the choice to bosh-dns.
      HEALTH = { 'healthy' => 3, 'unhealthy' => 1, 'all' => 4, 'default' => 0 }.freeze

      attr_reader :name, :instances, :properties, :instance_group, :default_network,
                  :deployment_name, :domain

      def initialize(name, spec)
        @name = name
        @spec = spec
        @instances = (spec['instances'] || []).map { |i| EvaluationLinkInstance.new(i) }
        @properties = spec['properties']
        @instance_group = spec['instance_group']
        @default_network = spec['default_network']
        @deployment_name = spec['deployment_name']
        @domain = spec['domain']
      end

      def p(*args)
        first_property(@properties, args, @name)
      end

      def if_p(*names, &block)
        if_property(@properties, names, &block)
      end

      # A manual link's address as given; otherwise the BOSH DNS group
      # query the director hands out (its DnsEncoder#encode_query):
      # `q-<filters>.<group>.<network>.<deployment>.<domain>`, or with
      # short DNS addresses `q-<filters>.q-g<group number>.<domain>`;
      # filters sorted as strings (`a<az number>` per AZ from the
      # director's AZ numbers, `n<network number>` when short, `y0`/`y1`
      # for the initial health check, `s<health>`).
      def address(criteria = {})
        return @spec['address'] if @spec['address']

        short = @spec['use_short_dns_addresses'] == true
        if short && @spec['group_number'].nil?
          raise ArgumentError, "link '#{@name}' has short DNS addresses but no group_number"
        end
        unless short || (@instance_group && @default_network && @deployment_name)
          raise ArgumentError,
                "link '#{@name}' has neither an address nor instance_group, default_network " \
                'and deployment_name'
        end

        criteria = criteria.transform_keys(&:to_sym)
        numbers = @spec['az_numbers'] || {}
        filters = (criteria[:azs] || []).map do |az|
          number = numbers[az.to_s]
          raise "Unknown AZ: '#{az}'" if number.nil?

          "a#{number}"
        end
        filters << "n#{@spec['network_number']}" if short && @spec['network_number']
        case criteria[:initial_health_check].to_s
        when 'synchronous' then filters << 'y1'
        when 'asynchronous' then filters << 'y0'
        end
        filters << "s#{HEALTH.fetch(criteria[:status].to_s, 0)}"
        query = "q-#{filters.sort.join}"
        domain = @domain || 'bosh'
        return [query, "q-g#{@spec['group_number']}", domain].join('.') if short

        [query, canonical(@instance_group), canonical(@default_network),
         canonical(@deployment_name), domain].join('.')
      end

      def inspect
        '#<link>'
      end

      private

      def canonical(name)
        name.to_s.downcase.tr('_', '-').gsub(/[^a-z0-9-]/, '')
      end
    end

    # What a template's `self` is: BOSH's EvaluationContext.
    class EvaluationContext
      include PropertyHelper

      attr_reader :name, :index, :properties, :raw_properties, :spec

      def initialize(spec)
        @name = spec['job'].is_a?(Hash) ? spec['job']['name'] : nil
        @index = spec['index']
        @spec = SpecStruct.wrap(spec)
        @raw_properties = spec['properties'] || {}
        @properties = SpecStruct.wrap(@raw_properties)
        @links = spec['links'] || {}
      end

      def get_binding
        binding
      end

      # The first of the named properties that is set, else the default
      # (when given), else UnknownProperty.
      def p(*args)
        first_property(@raw_properties, args)
      end

      # Whether any of the named properties is set (bosh-rs extension).
      def p?(*names)
        names.flatten.any? { |n| !lookup_property(@raw_properties, n).nil? }
      end

      # Yields the properties' values when all are set.
      def if_p(*names, &block)
        if_property(@raw_properties, names, &block)
      end

      def link(name)
        spec = @links[name]
        raise UnknownLink, name unless spec.is_a?(Hash) && spec.key?('instances')

        EvaluationLink.new(name, spec)
      end

      def if_link(name)
        spec = @links[name]
        return ActiveElseBlock.new(self) unless spec.is_a?(Hash) && spec.key?('instances')

        yield EvaluationLink.new(name, spec)
        InactiveElseBlock.new
      end

      def inspect
        '#<template context>'
      end
      alias to_s inspect
    end

    # ERB's output buffer, bounded so an endless template fails alone
    # instead of eating the process's memory.
    class RenderBuffer < String
      class << self
        attr_accessor :limit
      end

      def <<(other)
        super
        if bytesize > RenderBuffer.limit
          raise OutputTooLarge, "template output exceeds #{RenderBuffer.limit} bytes"
        end

        self
      end
    end

    # ERB writing into a RenderBuffer.
    class BoundedERB < ERB
      def set_eoutvar(compiler, eoutvar = '_erbout')
        super
        compiler.pre_cmd = ["#{eoutvar} = ::Bosh::Template::RenderBuffer.new(+'')"]
        compiler.post_cmd = ["::String.new(#{eoutvar})"]
      end
    end

    # Drives a batch.
    module Batch
      module_function

      def describe(obj)
        case obj
        when nil, true, false then obj.inspect
        when Module then obj.name || 'an anonymous module'
        when EvaluationContext then nil
        else "an instance of #{obj.class}"
        end
      end

      # The exception's message without values: NameError messages are
      # rebuilt (Ruby < 3.4 embeds the receiver's inspect), syntax errors
      # lose their file prefix. Returns [line, message].
      def explain(err, filename)
        line = nil
        locs = err.backtrace_locations || []
        hit = locs.find { |l| l.path == filename }
        line = hit.lineno if hit
        if line.nil?
          (err.backtrace || []).each do |l|
            m = l.match(/\A#{Regexp.escape(filename)}:(\d+)/)
            if m
              line = m[1].to_i
              break
            end
          end
        end
        message =
          case err
          when NoMethodError, NameError
            receiver = begin
              err.receiver
            rescue StandardError
              :unknown
            end
            who = receiver == :unknown ? nil : describe(receiver)
            first = err.message.to_s.lines.first.to_s
            text =
              if err.is_a?(NoMethodError)
                verb = first.start_with?('private method') ? 'private method' : 'undefined method'
                verb == 'private method' ? "private method '#{err.name}' called" : "undefined method '#{err.name}'"
              elsif first.start_with?('undefined local variable or method')
                "undefined local variable or method '#{err.name}'"
              elsif first.start_with?('uninitialized constant')
                first.strip
              else
                "#{err.class}: #{err.name}"
              end
            who ? "#{text} for #{who}" : text
          when SyntaxError
            msgs = []
            err.message.to_s.each_line do |l|
              if (m = l.match(/\A#{Regexp.escape(filename)}:(\d+): (.*)/))
                line ||= m[1].to_i
                msgs << m[2].strip unless m[2].strip.empty?
              elsif (m = l.match(/\^~* (.+)\z/))
                msgs << m[1].strip
              end
            end
            msgs.empty? ? 'syntax error' : msgs.uniq.join('; ')
          else
            err.message.to_s
          end
        [line, message.to_s.scrub.strip]
      end

      def file_json(text)
        utf8 = text.dup.force_encoding(Encoding::UTF_8)
        utf8.valid_encoding? ? { 'text' => utf8 } : { 'bytes' => text.bytes }
      end

      def render_request(req, jobs)
        errors = []
        rendered = req['jobs'].map do |job_req|
          job = jobs[job_req['job']]
          spec = req['spec'].merge(
            'properties' => NonFinite.decode(job_req['properties'] || {}),
            'links' => NonFinite.decode(job_req['links'] || {})
          )
          spec['release'] = job_req['release'] if job_req['release']
          job[:erbs].map do |template, erb|
            # A fresh context per template, so one template's changes to
            # spec or properties do not leak into the next (as BOSH).
            context = EvaluationContext.new(spec)
            begin
              file_json(erb.result(context.get_binding))
            rescue Exception => e # rubocop:disable Lint/RescueException
              line, message = explain(e, erb.filename)
              errors << { 'job' => job[:name], 'template' => template, 'line' => line,
                          'message' => message }
              nil
            end
          end
        end
        errors.empty? ? { 'jobs' => rendered } : { 'errors' => errors }
      end

      def run(input, out)
        RenderBuffer.limit = input.fetch('max_output')
        jobs = input.fetch('jobs').map do |job|
          erbs = job.fetch('templates').map do |template, source|
            erb = BoundedERB.new(source, trim_mode: '-')
            erb.filename = "#{job.fetch('name')}/#{template}"
            [template, erb]
          end
          { name: job.fetch('name'), erbs: erbs }
        end
        input.fetch('requests').each do |req|
          out.write(JSON.generate(render_request(req, jobs)), "\n")
          out.flush
        end
      end
    end
  end
end

# Templates get neither the protocol's stdin nor its stdout, and what they
# print (or warn) is dropped, so it cannot leak values into logs: stderr is
# kept for this driver's own failures only.
err = $stderr.dup
input = JSON.parse($stdin.read)
$stdin.reopen(File::NULL)
out = $stdout.dup
$stdout.reopen(File::NULL, 'w')
$stderr.reopen(File::NULL, 'w')
begin
  Bosh::Template::Batch.run(input, out)
  out.close
rescue Exception => e # rubocop:disable Lint/RescueException
  err.write("renderer: #{e.class}: #{e.message.to_s.lines.first.to_s.scrub.strip[0, 200]}\n")
  exit!(1)
end
